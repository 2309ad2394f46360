"""Messages about credentials: the handshake's (decoded by a decoder of
their own, before anything else), a spare worker taking its job's pass,
and people's tokens, made, listed and revoked by an admin (`manta token
create|list|revoke`)."""

# Annotations are not postponed: see protocol/messages.py.

from manta._private.protocol.identity import Credential, Quota, Role
from manta._private.protocol.structs import Msg, Record

__all__ = ["Quota"]  # defined with the principals, which carry it in their passes

# --- the handshake (see auth.handshake) ----------------------------------------


class Challenge(Msg, frozen=True):
    nonce: bytes


class Proof(Msg, frozen=True):
    """A pass and a signature of the transcript, or a person's token id and an HMAC."""

    nonce: bytes
    proof: bytes
    pass_blob: bytes = b""
    pass_sig: bytes = b""
    token_id: str = ""


class Welcome(Msg, frozen=True):
    pass_blob: bytes
    pass_sig: bytes
    proof: bytes
    # To a token's holder: an HMAC under the token's secret, over the
    # transcript and the cluster's key, which it may not know yet.
    mac: bytes = b""
    cluster_key: bytes = b""


class Refused(Msg, frozen=True):
    """The server's answer to a proof it does not accept, before it hangs up."""

    reason: str


# --- a spare worker becomes its job's ---------------------------------------------


class AssumeJob(Msg, frozen=True):
    """Agent -> a spare worker it leases to a job for the first time: the job's
    pass for it. Answered (Ack) once the worker uses it, before the lease is granted."""

    credential: Credential
    rid: int = 0


class Rebind(Msg, frozen=True):
    """A worker -> the head, on the connection it made as a spare: its new pass,
    and a signature with the pass's key over this connection's handshake nonces."""

    pass_blob: bytes
    pass_sig: bytes
    proof: bytes
    rid: int = 0


# --- people's tokens ---------------------------------------------------------------


class TokenInfo(Record, frozen=True):
    """A person's token as the head keeps it: never its secret."""

    token_id: str
    role: Role
    namespaces: tuple[str, ...]
    created: float
    # Seconds since the epoch; 0: never.
    expires: float = 0.0
    revoked: bool = False
    note: str = ""
    created_by: str = ""
    quota: Quota = Quota()


class CreateToken(Msg, frozen=True):
    role: Role
    namespaces: tuple[str, ...] = ()
    expires_s: float = 0.0  # from now; 0: never
    note: str = ""
    quota: Quota = Quota()
    rid: int = 0


class TokenCreated(Msg, frozen=True):
    token: str  # the whole token, shown once
    info: TokenInfo
    rid: int = 0


class ListTokens(Msg, frozen=True):
    rid: int = 0


class TokenList(Msg, frozen=True):
    tokens: list[TokenInfo]
    rid: int = 0


class RevokeToken(Msg, frozen=True):
    token_id: str
    rid: int = 0


# --- node certificates (TLS on TCP links, auth.pki) ------------------------------


class IssueCert(Msg, frozen=True):
    """A node -> the head, after the manta handshake: sign this CSR (PEM). The
    node's key never leaves it; `hosts` are addresses it listens on (SANs)."""

    csr: bytes
    hosts: tuple[str, ...] = ()
    rid: int = 0


class CertIssued(Msg, frozen=True):
    cert: bytes  # PEM, signed by the cluster CA
    ca: bytes  # the CA's PEM, which a joining node checks against --ca-hash
    rid: int = 0


REPLIES = (TokenCreated, TokenList, CertIssued)
