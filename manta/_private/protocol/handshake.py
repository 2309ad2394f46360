"""Mutual challenge-response over the cluster token, without I/O.

    server -> client   Challenge(server_nonce)
    client -> server   Proof(client_nonce, HMAC(token, "c" | server_nonce | client_nonce))
    server -> client   Welcome(HMAC(token, "s" | client_nonce | server_nonce))

Both sides prove they hold the token without sending it, and fresh nonces
on both sides stop a recorded exchange from being replayed. Until the
handshake completes a connection accepts only these three small messages;
nothing else is decoded, and user payloads are never unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from manta._private.protocol import messages as m

NONCE_SIZE = 32
# Handshake frames are tiny; anything larger before authentication is hostile.
MAX_HANDSHAKE_FRAME = 256


class AuthFailed(Exception):
    """The peer does not hold the cluster token or broke the handshake."""


def _mac(token: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token, label + a + b, hashlib.sha256).digest()


class ServerHandshake:
    def __init__(self, token: bytes, nonce: bytes | None = None) -> None:
        self._token = token
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self.done = False

    def start(self) -> bytes:
        return m.encode(m.Challenge(nonce=self._nonce))

    def receive(self, payload: bytes) -> bytes:
        """Checks the client's proof; returns the Welcome payload to send."""
        if self.done:
            raise AuthFailed("handshake already complete")
        try:
            msg = m.decode_handshake(payload)
        except m.DecodeError as e:
            raise AuthFailed(f"malformed handshake message: {e}") from None
        if not isinstance(msg, m.Proof) or len(msg.nonce) != NONCE_SIZE:
            raise AuthFailed(f"expected a proof, got {type(msg).__name__}")
        expected = _mac(self._token, b"c", self._nonce, msg.nonce)
        if not hmac.compare_digest(expected, msg.mac):
            raise AuthFailed("wrong cluster token")
        self.done = True
        return m.encode(m.Welcome(mac=_mac(self._token, b"s", msg.nonce, self._nonce)))


class ClientHandshake:
    def __init__(self, token: bytes, nonce: bytes | None = None) -> None:
        self._token = token
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._server_nonce: bytes | None = None
        self.done = False

    def receive_challenge(self, payload: bytes) -> bytes:
        try:
            msg = m.decode_handshake(payload)
        except m.DecodeError as e:
            raise AuthFailed(f"malformed handshake message: {e}") from None
        if not isinstance(msg, m.Challenge) or len(msg.nonce) != NONCE_SIZE:
            raise AuthFailed("expected a challenge")
        self._server_nonce = msg.nonce
        return m.encode(
            m.Proof(nonce=self._nonce, mac=_mac(self._token, b"c", msg.nonce, self._nonce))
        )

    def receive_welcome(self, payload: bytes) -> None:
        if self._server_nonce is None:
            raise AuthFailed("welcome before challenge")
        try:
            msg = m.decode_handshake(payload)
        except m.DecodeError as e:
            raise AuthFailed(f"malformed handshake message: {e}") from None
        if not isinstance(msg, m.Welcome):
            raise AuthFailed("expected a welcome")
        expected = _mac(self._token, b"s", self._nonce, self._server_nonce)
        if not hmac.compare_digest(expected, msg.mac):
            raise AuthFailed("server does not hold the cluster token")
        self.done = True
