"""Credentials, the handshake and the authorization tables, without processes."""

import msgspec
import pytest

from manta._private.auth import policy
from manta._private.auth.credentials import (
    LOCAL_ADMIN,
    AuthFailed,
    ClusterKeys,
    Identity,
    owner_credential,
    parse_person_token,
)
from manta._private.auth.handshake import ClientHandshake, ServerHandshake
from manta._private.head.tokens import TokenTable
from manta._private.protocol import auth_messages as am
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Credential, Kind, Principal, Role

SECRET = b"s" * 32
KEYS = ClusterKeys(SECRET)
HEAD = Identity.of(KEYS.node_credential("head"))


def job_identity(role=Role.SUBMIT, namespaces=(), job_id=3, expires=0.0, keys=KEYS):
    p = Principal(kind=Kind.JOB, role=role, name=f"job {job_id}", namespaces=namespaces, job_id=job_id,
                  expires=expires)
    return Identity.of(keys.mint(p))


def run(server, client):
    proof = client.receive_challenge(server.start())
    welcome = server.receive(proof)
    return client.receive_welcome(welcome)


class Book:
    def __init__(self, table):
        self.table = table

    def resolve(self, token_id):
        return self.table.resolve(token_id)


def test_a_pass_handshake_tells_each_side_who_the_other_is():
    s, c = ServerHandshake(HEAD), ClientHandshake(job_identity(), expect=Role.CLUSTER)
    peer = run(s, c)
    assert peer.name == "head" and peer.role is Role.CLUSTER
    assert s.peer.job_id == 3 and s.peer.role is Role.SUBMIT


def test_a_pass_of_another_cluster_is_refused():
    s = ServerHandshake(HEAD)
    c = ClientHandshake(job_identity(keys=ClusterKeys(b"x" * 32)))
    proof = c.receive_challenge(s.start())
    with pytest.raises(AuthFailed, match="not signed by this cluster"):
        s.receive(proof)
    assert not s.done


def test_a_stolen_pass_is_no_use_without_its_key():
    victim = job_identity(role=Role.ADMIN)
    thief_key = job_identity(role=Role.VIEW)
    # The thief copies the victim's pass (seen on the wire) but signs with its own key.
    stolen = Identity(victim.credential, victim.principal, thief_key.key, victim.cluster_key)
    s = ServerHandshake(HEAD)
    proof = ClientHandshake(stolen).receive_challenge(s.start())
    with pytest.raises(AuthFailed, match="does not hold the key"):
        s.receive(proof)


def test_an_expired_pass_is_refused():
    s = ServerHandshake(HEAD, clock=lambda: 2000.0)
    proof = ClientHandshake(job_identity(expires=1000.0)).receive_challenge(s.start())
    with pytest.raises(AuthFailed, match="expired"):
        s.receive(proof)


def test_a_job_posing_as_the_agent_is_refused_by_the_client():
    impostor = job_identity()
    s, c = ServerHandshake(impostor), ClientHandshake(job_identity(), expect=Role.CLUSTER)
    with pytest.raises(AuthFailed, match="not part of the cluster"):
        run(s, c)


def test_a_recorded_proof_cannot_be_replayed():
    ident = job_identity()
    s1 = ServerHandshake(HEAD)
    proof = ClientHandshake(ident).receive_challenge(s1.start())
    s1.receive(proof)
    s2 = ServerHandshake(HEAD)
    s2.start()
    with pytest.raises(AuthFailed):
        s2.receive(proof)


def test_only_handshake_messages_are_decoded_before_authentication():
    s = ServerHandshake(HEAD)
    s.start()
    with pytest.raises(AuthFailed):
        s.receive(m.encode(m.Ack(rid=1)))
    with pytest.raises(AuthFailed):
        s.receive(b"garbage")


def test_a_persons_token_works_at_the_head_only_and_proves_the_head():
    table = TokenTable(KEYS, clock=lambda: 100.0)
    token, info = table.create(Role.VIEW, ("ns",), 0, "", "admin")
    person = Identity.of(Credential(token=token))
    s, c = ServerHandshake(HEAD, Book(table)), ClientHandshake(person, expect=Role.CLUSTER)
    assert run(s, c).name == "head"
    assert s.peer.role is Role.VIEW and s.peer.namespaces == ("ns",) and s.peer.token_id == info.token_id
    assert c.cluster_key == KEYS.public
    # An agent (no token book) does not take people's tokens.
    s = ServerHandshake(HEAD)
    with pytest.raises(AuthFailed, match="only by the head"):
        s.receive(ClientHandshake(person).receive_challenge(s.start()))


def test_a_server_that_cannot_derive_the_token_is_not_trusted():
    table = TokenTable(KEYS)
    token, _ = table.create(Role.SUBMIT, (), 0, "", "admin")
    other = ClusterKeys(b"o" * 32)
    fake_head = Identity.of(other.node_credential("head"))
    # The impostor knows the token id but derives another secret.
    fake_table = TokenTable(other)
    fake_table.tokens = dict(table.tokens)
    s = ServerHandshake(fake_head, Book(fake_table))
    proof = ClientHandshake(Identity.of(Credential(token=token))).receive_challenge(s.start())
    with pytest.raises(AuthFailed, match="wrong token secret"):
        s.receive(proof)


def test_revoked_expired_and_unknown_tokens_are_refused_with_the_reason():
    now = [100.0]
    table = TokenTable(KEYS, clock=lambda: now[0])
    revoked, info = table.create(Role.ADMIN, (), 0, "", "admin")
    table.revoke(info.token_id)
    with pytest.raises(AuthFailed, match="revoked"):
        table.resolve(info.token_id)
    _, short = table.create(Role.VIEW, (), 60, "", "admin")
    now[0] = 200.0
    with pytest.raises(AuthFailed, match="expired"):
        table.resolve(short.token_id)
    with pytest.raises(AuthFailed, match="not known"):
        table.resolve("0123456789abcdef")
    with pytest.raises(KeyError):
        table.revoke(LOCAL_ADMIN)
    with pytest.raises(ValueError, match="role"):
        table.create(Role.CLUSTER, (), 0, "", "admin")


def test_the_owner_token_derived_from_the_secret_is_the_heads_local_admin():
    parsed = parse_person_token(owner_credential(SECRET).token)
    assert parsed is not None and parsed[0] == LOCAL_ADMIN
    secret, principal = TokenTable(KEYS).resolve(LOCAL_ADMIN)
    assert secret == parsed[1] and principal.role is Role.ADMIN
    assert parse_person_token("mt1.x.zz") is None


def test_every_head_message_type_is_in_the_table_or_needs_the_cluster():
    view = Principal(kind=Kind.PERSON, role=Role.VIEW, name="v")
    submit = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="s", namespaces=("a",), job_id=1)
    assert policy.refusal(policy.HEAD, view, m.ListActors()) == ""
    assert "submit role" in policy.refusal(policy.HEAD, view, m.KillActor(actor_id=b"x", no_restart=True))
    assert "admin role" in policy.refusal(policy.HEAD, submit, m.ShutdownCluster())
    assert "cluster role" in policy.refusal(policy.HEAD, submit, m.NodeResources(
        node_id=b"n", available={}, pending=[], total={}))
    assert policy.refusal(policy.HEAD, submit, am.CreateToken(role=Role.VIEW))
    # A type nobody listed needs the cluster's own role.
    assert "cluster role" in policy.refusal(policy.HEAD, submit, m.StoreChunk(rid=1, digest=b"", data=b""))
    assert policy.namespace_refusal(submit, "a", "x") == ""
    assert "namespace 'b'" in policy.namespace_refusal(submit, "b", "write KV entries")
    admin = msgspec.structs.replace(submit, role=Role.ADMIN)
    assert policy.namespace_refusal(admin, "b", "x") == ""
    assert policy.node_refusal(Principal(kind=Kind.NODE, role=Role.CLUSTER, name="n", node_id=b"a"), b"b")
