"""The head's access control: who each request is from, and whether it may.

`HeadAccess.allows` runs before the head looks at a message: the role the
message's type needs (`auth.policy.HEAD`), then what depends on its target
(the namespace of an actor, a placement group or a KV entry; the node a
report is about; the worker an actor lives in). A refusal answers a
request with an `AuthorizationError` reply and changes nothing.

People's tokens are kept here too (`TokenTable`, persisted with the head's
state), and so is the pass a driver gets when it registers its job: the
driver proves its token to the head, and the head signs a pass for the
job with the driver's own key, which the driver then shows to agents and
workers, none of which know people's tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from manta._private.auth import policy
from manta._private.auth.audit import AuditLog, peer_of
from manta._private.auth.credentials import LOCAL_ADMIN, AuthFailed, ClusterKeys
from manta._private.auth.handshake import check_rebind
from manta._private.head.storage import decode, encode
from manta._private.head.tokens import TokenTable
from manta._private.ids import function_mismatch
from manta._private.protocol import auth_messages as am
from manta._private.protocol import checks
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)



class HeadAccess:
    def __init__(self, head: Head, keys: ClusterKeys, audit_path: str | None = None) -> None:
        self.head = head
        self.keys = keys
        self.tokens = TokenTable(keys)
        self.audit = AuditLog(audit_path)
        self.refusals = policy.Refusals(log)
        Check = Callable[[Principal, Any], str]
        self._targets: dict[type, Check] = {
            m.GetNamedActor: lambda p, msg: policy.namespace_refusal(p, msg.namespace, "look up actors"),
            m.CreateActor: lambda p, msg: policy.namespace_refusal(p, msg.spec.namespace, "create actors")
            or _own_job(p, msg.spec.job_id, "create actors"),
            m.KillActor: lambda p, msg: self._actor_refusal(p, msg.actor_id, "kill actors"),
            m.ReleaseActor: lambda p, msg: self._actor_refusal(p, msg.actor_id, "release actors"),
            m.ActorExiting: self._exiting_refusal,
            m.CreatePlacementGroup: lambda p, msg: policy.namespace_refusal(
                p, msg.spec.namespace, "create placement groups") or _own_job(p, msg.spec.job_id,
                                                                              "create placement groups"),
            m.RemovePlacementGroup: self._pg_refusal,
            m.KvGet: lambda p, msg: policy.namespace_refusal(p, msg.namespace, "read KV entries"),
            m.KvList: lambda p, msg: policy.namespace_refusal(p, msg.namespace, "list KV entries"),
            m.KvPut: lambda p, msg: policy.namespace_refusal(p, msg.namespace, "write KV entries"),
            m.KvDel: lambda p, msg: policy.namespace_refusal(p, msg.namespace, "delete KV entries"),
            # Stored only under its own content hash, so no one can plant code
            # under the id of another job's function (they share ids by content).
            m.PutFunction: lambda p, msg: function_mismatch(msg.fn_id, msg.blob),
            m.RegisterDriver: self._driver_refusal,
            m.RegisterNode: lambda p, msg: policy.node_refusal(p, msg.node.node_id),
            m.NodeResources: lambda p, msg: policy.node_refusal(p, msg.node_id),
            m.WorkerExited: self._worker_exit_refusal,
            am.Rebind: lambda p, msg: "" if p.kind is Kind.JOB and p.job_id == 0 and p.worker_id else
            f"{p.describe()} is not a spare worker: its pass is final",
        }

    # -- checks -----------------------------------------------------------

    def allows(self, conn: Connection, msg: Any) -> bool:
        p = conn.principal
        why = policy.refusal(policy.HEAD, p, msg)
        if not why:
            check = self._targets.get(type(msg))
            if check is not None:
                why = check(p, msg)
            if not why:
                # A hostile peer's inf or negative resources; a table at its bound.
                bad = checks.problem(msg) or self.head.bounds.refusal(msg)
                if bad:
                    self.refuse(conn, msg, bad, m.ErrorKind.VALUE)
                    return False
                over = self.head.quotas.refusal(p, msg)
                if over:
                    self.refuse(conn, msg, over, m.ErrorKind.QUOTA)
                    return False
                audited = AUDITED.get(type(msg))
                if audited is not None:
                    self._audit_allowed(conn, msg, *audited(msg))
                return True
        self.refuse(conn, msg, why)
        return False

    def refuse(self, conn: Connection, msg: Any, why: str, kind: m.ErrorKind = m.ErrorKind.AUTHORIZATION) -> None:
        action, target, namespace = (AUDITED.get(type(msg)) or _unaudited)(msg)
        self.audit.refused(conn.principal, action, target=target, namespace=namespace, peer=peer_of(conn),
                           detail=why)
        self.refusals.answer(conn, msg, why, kind)

    def _audit_allowed(self, conn: Connection, msg: Any, action: str, target: str, namespace: str) -> None:
        p = conn.principal
        if type(msg) is m.GetNamedActor and namespace in ("", self._own_namespace(conn)):
            return  # only lookups across namespaces are audited
        self.audit.record(p, action, target=target, namespace=namespace, peer=peer_of(conn))

    def _own_namespace(self, conn: Connection) -> str:
        job = self.head.jobs.get(conn.principal.job_id)
        return job.namespace if job is not None else ""

    def on_auth(self, conn: Connection, why: str) -> None:
        if why:
            self.audit.auth_failed(peer_of(conn), why)
        elif conn.principal.kind is not Kind.NODE:
            self.audit.record(conn.principal, "auth.login", peer=peer_of(conn))

    def event(self, action: str, target: str, namespace: str = "", detail: str = "") -> None:
        """Something the head itself did: a job or node gone, the cluster stopping."""
        self.audit.record(HEAD_ITSELF, action, target=target, namespace=namespace, detail=detail)

    def _actor_refusal(self, p: Principal, actor_id: bytes, what: str) -> str:
        entry = self.head.actors.get(actor_id)
        if entry is None:
            return ""  # answered as an unknown actor, which tells nothing
        return policy.namespace_refusal(p, entry.spec.namespace, what)

    def _exiting_refusal(self, p: Principal, msg: m.ActorExiting) -> str:
        entry = self.head.actors.get(msg.actor_id)
        if entry is None or p.role >= Role.ADMIN or (p.worker_id and p.worker_id == entry.worker_id):
            return ""
        return f"{p.describe()} is not the worker of actor {msg.actor_id.hex()}"

    def _pg_refusal(self, p: Principal, msg: m.RemovePlacementGroup) -> str:
        pg = self.head.pgs.get(msg.pg_id)
        if pg is None:
            return ""
        return policy.namespace_refusal(p, pg.spec.namespace, "remove placement groups")

    def _worker_exit_refusal(self, p: Principal, msg: m.WorkerExited) -> str:
        actor_id = self.head.actor_by_worker.get(msg.worker_id)
        entry = self.head.actors.get(actor_id) if actor_id else None
        if entry is None or entry.node_id == p.node_id:
            return ""
        return f"{p.describe()} may not report the exit of a worker on node {entry.node_id.hex()[:12]}"

    def _driver_refusal(self, p: Principal, msg: m.RegisterDriver) -> str:
        if p.kind is Kind.JOB and msg.job_id != p.job_id:
            return f"{p.describe()} may not register as the driver of job {msg.job_id}"
        if p.kind is Kind.NODE:
            return "a node is not a driver"
        job = self.head.jobs.get(msg.job_id) if msg.job_id else None
        if job is not None:
            if job.conn is not None and not job.conn.closed:
                return f"job {msg.job_id} already has its driver"
            if job.token_id != p.token_id and p.role < Role.ADMIN:
                return f"{p.describe()} may not take over job {msg.job_id}, which another token started"
        if msg.namespace:
            return policy.namespace_refusal(p, msg.namespace, "run a job")
        return ""

    # -- drivers ----------------------------------------------------------

    def job_pass(
        self, person: Principal, job_id: int, namespace: str, msg: m.RegisterDriver
    ) -> tuple[Principal, bytes, bytes]:
        """The job's principal and its driver's pass, for the key it registered with."""
        principal = self._job(person, job_id, namespace, msg.worker_id)
        return (principal, *self.keys.sign_pass(principal, msg.key))

    def job_principal(self, job_id: int) -> Principal | None:
        """A job's principal, for the passes of the workers an agent starts on its behalf
        (None if its token is no longer valid: no worker is started for it)."""
        job = self.head.jobs.get(job_id)
        if job is None:
            return None
        try:
            _, person = self.tokens.resolve(job.token_id or LOCAL_ADMIN)
        except AuthFailed:
            return None
        return self._job(person, job_id, job.namespace)

    def _job(self, person: Principal, job_id: int, namespace: str, worker_id: bytes = b"") -> Principal:
        """What a job started with `person`'s token may do: what the token may, and
        also in the job's own namespace (an anonymous one, if it named none).
        Its quotas go into its pass, for the node agents to enforce."""
        namespaces = person.namespaces
        if namespaces and namespace not in namespaces:
            namespaces = (*namespaces, namespace)
        per_job = self.head.quotas.per_job
        token = self.head.quotas.token_quota(person)
        return Principal(
            kind=Kind.JOB, role=min(person.role, Role.ADMIN), name=f"job {job_id}", namespaces=namespaces,
            job_id=job_id, worker_id=worker_id, token_id=person.token_id, expires=person.expires,
            quota=per_job if per_job.limits() else None, token_quota=token,
        )

    def rebind(self, conn: Connection, msg: am.Rebind) -> None:
        """A spare worker now has its job's pass: this connection acts as it from here on."""
        key = self.head.identity.cluster_key
        assert key is not None
        try:
            principal = check_rebind(key, conn.session_id, msg.pass_blob, msg.pass_sig,
                                     msg.proof)
        except AuthFailed as e:
            self.refuse(conn, msg, str(e))
            return
        if principal.worker_id != conn.principal.worker_id or principal.kind is not Kind.JOB:
            self.refuse(conn, msg, f"{conn.principal.describe()} may not become {principal.describe()}")
            return
        conn.principal = principal
        conn.reply(msg, m.Ack())

    # -- tokens -----------------------------------------------------------

    def restore(self, table: dict[bytes, bytes]) -> None:
        for data in table.values():
            info = decode(am.TokenInfo, data)
            self.tokens.tokens[info.token_id] = info

    def handle_token(self, conn: Connection, msg: Any) -> None:
        t = type(msg)
        try:
            if t is am.CreateToken:
                token, info = self.tokens.create(
                    msg.role, tuple(msg.namespaces), msg.expires_s, msg.note, conn.principal.name, msg.quota
                )
                self.head.storage.put("tokens", info.token_id.encode(), encode(info))
                self.audit.record(conn.principal, "token.create", target=info.token_id, peer=peer_of(conn),
                                  detail=f"role {info.role.name.lower()}, namespaces {list(info.namespaces) or 'all'}")
                conn.reply(msg, am.TokenCreated(token=token, info=info))
            elif t is am.ListTokens:
                conn.reply(msg, am.TokenList(tokens=sorted(self.tokens.tokens.values(), key=lambda i: i.created)))
            elif t is am.RevokeToken:
                info = self.tokens.revoke(msg.token_id)
                self.head.storage.put("tokens", info.token_id.encode(), encode(info))
                self.audit.record(conn.principal, "token.revoke", target=info.token_id, peer=peer_of(conn))
                for c in list(self.head.conns):
                    if c.principal.token_id == info.token_id and c is not conn:
                        c.abort(f"its token {info.token_id} was revoked")
                conn.reply(msg, m.Ack())
        except KeyError as e:
            conn.reply_error(msg, m.ErrorKind.KEY, str(e.args[0]))
        except ValueError as e:
            conn.reply_error(msg, m.ErrorKind.VALUE, str(e))


def _own_job(p: Principal, job_id: int, what: str) -> str:
    if p.kind is not Kind.JOB or p.role >= Role.ADMIN or not p.job_id or job_id == p.job_id:
        return ""
    return f"{p.describe()} may not {what} for job {job_id}"


TOKEN_MESSAGES = (am.CreateToken, am.ListTokens, am.RevokeToken)
HEAD_ITSELF = Principal(kind=Kind.NODE, role=Role.CLUSTER, name="head")


def _ns_key(msg: Any) -> str:
    return f"{msg.namespace}/{msg.key.decode(errors='replace')}"


# What the audit log records of each request it names: (action, target, namespace).
AUDITED: dict[type, Callable[[Any], tuple[str, str, str]]] = {
    m.RegisterDriver: lambda msg: ("job.start", str(msg.job_id or ""), msg.namespace),
    m.CreateActor: lambda msg: ("actor.create", msg.spec.actor_id.hex(), msg.spec.namespace),
    m.KillActor: lambda msg: ("actor.kill", msg.actor_id.hex(), ""),
    m.GetNamedActor: lambda msg: ("actor.lookup", msg.name, msg.namespace),
    m.CreatePlacementGroup: lambda msg: ("placement_group.create", msg.spec.pg_id.hex(), msg.spec.namespace),
    m.RemovePlacementGroup: lambda msg: ("placement_group.remove", msg.pg_id.hex(), ""),
    m.KvPut: lambda msg: ("kv.put", _ns_key(msg), msg.namespace),
    m.KvDel: lambda msg: ("kv.delete", _ns_key(msg), msg.namespace),
    m.RegisterNode: lambda msg: ("node.join", msg.node.node_id.hex(), ""),
    m.PutFunction: lambda msg: ("function.put", msg.fn_id.hex(), ""),
    m.ShutdownCluster: lambda msg: ("cluster.shutdown", "", ""),
}


def _unaudited(msg: Any) -> tuple[str, str, str]:
    return "request." + policy.verb(type(msg).__name__).replace(" ", "_"), "", getattr(msg, "namespace", "") or ""
