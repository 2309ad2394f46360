"""Mutual authentication of a connection, without I/O.

    server -> client   Challenge(server_nonce)
    client -> server   Proof(client_nonce, its pass | a person's token id, proof)
    server -> client   Welcome(its pass, proof[, mac, cluster key])  or  Refused(why)

A client with a pass proves it holds the pass's key by signing the
transcript (both nonces and its pass); the server checks that the cluster
signed the pass. A client with a person's token proves it holds the token
with an HMAC under the token's secret; only the head, which can derive
that secret and knows which tokens were revoked, accepts those. The server
proves itself the same way in return, and a token's holder, who may not
know the cluster's key yet, also gets an HMAC under its secret over the
key it is told. Fresh nonces on both sides stop a recorded exchange from
being replayed, and until the handshake completes nothing else is decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Protocol

from manta._private.auth.credentials import AuthFailed, Identity, check_pass
from manta._private.auth.ed25519 import PublicKey
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Principal, Role

NONCE_SIZE = 32
# Handshake frames hold a pass or two at most; anything larger before
# authentication is hostile.
MAX_HANDSHAKE_FRAME = 2048

_C = b"manta hs2 c\0"
_S = b"manta hs2 s\0"


class TokenBook(Protocol):
    def resolve(self, token_id: str) -> tuple[bytes, Principal]:
        """The secret and principal of a person's token; AuthFailed(why) if it is not valid."""
        ...


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def _decode(payload: bytes) -> m.HandshakeMsg:
    try:
        return m.decode_handshake(payload)
    except m.DecodeError as e:
        raise AuthFailed(f"malformed handshake message: {e}") from None


def refusal(reason: str) -> bytes:
    return m.encode(m.Refused(reason=reason[:200]))


class ServerHandshake:
    def __init__(
        self, identity: Identity, tokens: TokenBook | None = None, *, nonce: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if identity.principal is None or identity.cluster_key is None:
            raise ValueError("a server needs a pass and the cluster's key")
        self._id = identity
        self._tokens = tokens
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._clock = clock
        self.done = False
        self.peer: Principal | None = None
        # Both nonces, once done: names this connection (a `Rebind` signs it).
        self.session_id = b""

    def start(self) -> bytes:
        return m.encode(m.Challenge(nonce=self._nonce))

    def receive(self, payload: bytes) -> bytes:
        """Checks the client's proof; returns the Welcome to send (`peer` is then set)."""
        if self.done:
            raise AuthFailed("handshake already complete")
        msg = _decode(payload)
        if not isinstance(msg, m.Proof) or len(msg.nonce) != NONCE_SIZE:
            raise AuthFailed(f"expected a proof, got {type(msg).__name__}")
        ident = self._id
        assert ident.cluster_key is not None
        mine = ident.credential.pass_blob
        server_part = _S + msg.nonce + self._nonce + mine
        welcome_mac = b""
        cluster_key = b""
        if msg.token_id:
            if self._tokens is None:
                raise AuthFailed("a person's token is accepted only by the head: connect there first")
            secret, principal = self._tokens.resolve(msg.token_id)
            expected = _mac(secret, _C + self._nonce + msg.nonce + msg.token_id.encode())
            if not hmac.compare_digest(expected, msg.proof):
                raise AuthFailed("wrong token secret")
            cluster_key = ident.credential.cluster_key
            welcome_mac = _mac(secret, server_part + cluster_key)
        else:
            principal, holder = check_pass(ident.cluster_key, msg.pass_blob, msg.pass_sig, self._clock())
            if not holder.verify_ok(msg.proof, _C + self._nonce + msg.nonce + msg.pass_blob):
                raise AuthFailed(f"the peer does not hold the key of the pass of {principal.name}")
        self.done = True
        self.peer = principal
        self.session_id = self._nonce + msg.nonce
        return m.encode(m.Welcome(
            pass_blob=mine, pass_sig=ident.credential.pass_sig, proof=ident.sign(server_part),
            mac=welcome_mac, cluster_key=cluster_key,
        ))


class ClientHandshake:
    def __init__(
        self, identity: Identity, expect: Role | None = None, *, nonce: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._id = identity
        self._expect = expect
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._clock = clock
        self.server_nonce: bytes | None = None
        self.done = False
        self.peer: Principal | None = None
        # Learned from a Welcome authenticated by the token's secret.
        self.cluster_key: bytes = b""
        self.session_id = b""

    def receive_challenge(self, payload: bytes) -> bytes:
        msg = _decode(payload)
        if not isinstance(msg, m.Challenge) or len(msg.nonce) != NONCE_SIZE:
            raise AuthFailed("expected a challenge")
        self.server_nonce = msg.nonce
        ident = self._id
        if ident.principal is not None:
            blob = ident.credential.pass_blob
            return m.encode(m.Proof(
                nonce=self._nonce, pass_blob=blob, pass_sig=ident.credential.pass_sig,
                proof=ident.sign(_C + msg.nonce + self._nonce + blob),
            ))
        if not ident.token_id:
            raise AuthFailed("no credential to present")
        proof = _mac(ident.token_secret, _C + msg.nonce + self._nonce + ident.token_id.encode())
        return m.encode(m.Proof(nonce=self._nonce, token_id=ident.token_id, proof=proof))

    def receive_welcome(self, payload: bytes) -> Principal:
        if self.server_nonce is None:
            raise AuthFailed("welcome before challenge")
        msg = _decode(payload)
        if isinstance(msg, m.Refused):
            raise AuthFailed(msg.reason)
        if not isinstance(msg, m.Welcome):
            raise AuthFailed("expected a welcome")
        ident = self._id
        server_part = _S + self._nonce + self.server_nonce + msg.pass_blob
        key = ident.cluster_key
        if ident.principal is None:
            # A token's holder: the server proves it can derive the token's secret.
            expected = _mac(ident.token_secret, server_part + msg.cluster_key)
            if not hmac.compare_digest(expected, msg.mac):
                raise AuthFailed("the server does not know this token: it is not this cluster's head")
            self.cluster_key = msg.cluster_key
            key = PublicKey.from_public_bytes(msg.cluster_key)
        if key is None:
            raise AuthFailed("no cluster key to check the server's pass with")
        principal, holder = check_pass(key, msg.pass_blob, msg.pass_sig, self._clock())
        if not holder.verify_ok(msg.proof, server_part):
            raise AuthFailed(f"the server does not hold the key of the pass of {principal.name}")
        if self._expect is not None and not principal.may(self._expect):
            raise AuthFailed(f"the server is {principal.describe()}, not part of the cluster")
        self.done = True
        self.peer = principal
        self.session_id = self.server_nonce + self._nonce
        return principal


_REBIND = b"manta rebind\0"


def rebind_proof(identity: Identity, session_id: bytes) -> bytes:
    """Proves, on the connection `session_id` names, that the sender holds its new pass's key."""
    return identity.sign(_REBIND + session_id + identity.credential.pass_blob)


def check_rebind(cluster_key: PublicKey, session_id: bytes, blob: bytes, sig: bytes, proof: bytes) -> Principal:
    principal, holder = check_pass(cluster_key, blob, sig)
    if not holder.verify_ok(proof, _REBIND + session_id + blob):
        raise AuthFailed(f"the sender does not hold the key of the pass of {principal.name}")
    return principal
