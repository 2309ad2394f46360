"""Making and checking credentials: the cluster's keys, passes, people's tokens.

Everything derives from the cluster secret (the cluster token, held only
by the head and the node agents):

- a signing key (Ed25519), whose public half every process is given: the
  head and agents sign *passes*, each naming a principal and the public
  key of the process that holds it. A process proves it holds a pass by
  signing the handshake with the pass's private key, so a pass seen on the
  wire is no use to anyone else. Workers get passes scoped to their job:
  they never see the cluster secret.
- people's tokens (`manta token create`): `mt1.<id>.<secret>`, where the
  secret is an HMAC of the id under a key derived from the cluster secret.
  The head derives it again to check a token, so it stores no secrets,
  only each token's role, namespaces, expiry and whether it was revoked.
  The `local-admin` token is the cluster owner's: every node writes it to
  its session directory for local drivers, and it cannot be revoked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from manta._private.auth.ed25519 import PrivateKey, PublicKey, hkdf_sha256
from manta._private.auth.tls_contexts import TlsContexts
from manta._private.protocol.identity import (
    Claims,
    Credential,
    Kind,
    Principal,
    Role,
    decode_claims,
    encode_claims,
)

LOCAL_ADMIN = "local-admin"
TOKEN_PREFIX = "mt1"
_TOKEN_RE = re.compile(r"^mt1\.([a-z0-9-]{1,64})\.([0-9a-f]{64})$")
_PASS_LABEL = b"manta pass v1\0"


class AuthFailed(Exception):
    """A credential is not valid, or the peer broke the handshake."""


def derive(secret: bytes, label: bytes, size: int = 32) -> bytes:
    """A key for one purpose, derived from the cluster secret (HKDF-SHA256)."""
    return hkdf_sha256(secret, b"manta " + label, size)


# -- the cluster token ------------------------------------------------------


def parse_token(text: str) -> bytes:
    """A token as written in a token file or MANTA_TOKEN: 64 hex digits, or any phrase."""
    text = text.strip()
    if not text:
        raise ValueError("the cluster token is empty")
    try:
        raw = bytes.fromhex(text)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    return _token_of_phrase(text)


# A phrase is stretched with scrypt so that each guess at it costs ~0.1 s and
# 32 MiB. The salt is fixed (and specific to manta): every node must derive
# the same token from the same phrase with nothing exchanged first, so no
# per-cluster salt is possible. A random 64-hex token needs none of this.
PHRASE_SALT = b"manta cluster token from a phrase, v1"
PHRASE_SCRYPT_N = 2**15


@functools.lru_cache(maxsize=4)
def _token_of_phrase(phrase: str) -> bytes:
    return hashlib.scrypt(phrase.encode(), salt=PHRASE_SALT, n=PHRASE_SCRYPT_N, r=8, p=1, maxmem=64 << 20, dklen=32)


# -- people's tokens ----------------------------------------------------------


def format_token(token_id: str, secret: bytes) -> str:
    return f"{TOKEN_PREFIX}.{token_id}.{secret.hex()}"


def parse_person_token(text: str) -> tuple[str, bytes] | None:
    """(id, secret) of a person's token, or None if `text` is not one."""
    match = _TOKEN_RE.match(text.strip())
    if match is None:
        return None
    return match.group(1), bytes.fromhex(match.group(2))


def looks_like_person_token(text: str) -> bool:
    return text.strip().startswith(TOKEN_PREFIX + ".")


def _token_secret(token_key: bytes, token_id: str) -> bytes:
    return hmac.new(token_key, token_id.encode(), hashlib.sha256).digest()


def owner_credential(secret: bytes) -> Credential:
    """What a driver given the cluster secret presents: the owner's token, derived
    from it (the driver then holds the token, not the secret)."""
    return Credential(token=format_token(LOCAL_ADMIN, _token_secret(derive(secret, b"person tokens"), LOCAL_ADMIN)))


class ClusterKeys:
    """What the cluster secret gives its holder (the head, an agent)."""

    def __init__(self, secret: bytes) -> None:
        self._signing = PrivateKey.from_private_bytes(derive(secret, b"pass signing"))
        self.public = self._signing.public_key().raw()
        self._token_key = derive(secret, b"person tokens")
        # Keys the digests of object chunks sent between nodes (node/transfer.py).
        self.transfer_key = derive(secret, b"transfer checksums")

    def token_secret(self, token_id: str) -> bytes:
        return _token_secret(self._token_key, token_id)

    def token(self, token_id: str) -> str:
        return format_token(token_id, self.token_secret(token_id))

    def sign_pass(self, principal: Principal, holder_key: bytes) -> tuple[bytes, bytes]:
        """A pass (blob, signature) for `principal`, held by whoever has the private half of `holder_key`."""
        if len(holder_key) != 32:
            raise ValueError("a pass's key is a raw Ed25519 public key of 32 bytes")
        blob = encode_claims(Claims(principal=principal, key=holder_key))
        return blob, self._signing.sign(_PASS_LABEL + blob)

    def mint(self, principal: Principal) -> Credential:
        """A pass for `principal`, with a fresh key pair, for the process that will hold it."""
        key = PrivateKey.generate()
        blob, sig = self.sign_pass(principal, key.public_key().raw())
        return Credential(pass_blob=blob, pass_sig=sig, key=key.raw(), cluster_key=self.public)

    def node_credential(self, name: str, node_id: bytes = b"") -> Credential:
        return self.mint(Principal(kind=Kind.NODE, role=Role.CLUSTER, name=name, node_id=node_id))


@dataclass
class Identity:
    """A process's credential, ready to use in handshakes."""

    credential: Credential
    principal: Principal | None = None  # the pass's; None for a token's holder
    key: PrivateKey | None = None
    cluster_key: PublicKey | None = None
    token_id: str = ""
    token_secret: bytes = b""
    # The node's certificates, when its TCP links use TLS (set by the process).
    tls: TlsContexts | None = None

    @classmethod
    def of(cls, credential: Credential, tls: TlsContexts | None = None) -> Identity:
        ident = cls(credential, tls=tls)
        if credential.cluster_key:
            ident.cluster_key = PublicKey.from_public_bytes(credential.cluster_key)
        if credential.pass_blob:
            ident.key = PrivateKey.from_private_bytes(credential.key)
            ident.principal = decode_claims(credential.pass_blob).principal
        if credential.token:
            parsed = parse_person_token(credential.token)
            if parsed is None:
                raise AuthFailed("the token is not a manta token (mt1.<id>.<secret>)")
            ident.token_id, ident.token_secret = parsed
        return ident

    def assume(self, credential: Credential) -> None:
        """Becomes `credential` in place: everything holding this identity (a listener,
        the pool of peers, the head link) presents the new pass from now on."""
        new = Identity.of(credential)
        self.credential, self.principal, self.key = new.credential, new.principal, new.key
        self.cluster_key, self.token_id, self.token_secret = new.cluster_key, new.token_id, new.token_secret

    def sign(self, data: bytes) -> bytes:
        assert self.key is not None
        return self.key.sign(data)


def check_pass(
    cluster_key: PublicKey, blob: bytes, sig: bytes, now: float | None = None
) -> tuple[Principal, PublicKey]:
    """The principal a pass names and its holder's public key, if the cluster signed it."""
    if not cluster_key.verify_ok(sig, _PASS_LABEL + blob):
        raise AuthFailed("the pass is not signed by this cluster")
    try:
        claims = decode_claims(blob)
        holder = PublicKey.from_public_bytes(claims.key)
    except Exception:
        raise AuthFailed("malformed pass") from None
    p = claims.principal
    if p.expires and p.expires < (time.time() if now is None else now):
        raise AuthFailed(f"the credential of {p.name} expired")
    return p, holder
