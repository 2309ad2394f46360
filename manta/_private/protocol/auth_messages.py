"""Messages about credentials: people's tokens, made, listed and revoked
by an admin (`manta token create|list|revoke`)."""

from __future__ import annotations

from manta._private.protocol.identity import Role
from manta._private.protocol.structs import Msg, Record


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


class CreateToken(Msg, frozen=True):
    role: Role
    namespaces: tuple[str, ...] = ()
    expires_s: float = 0.0  # from now; 0: never
    note: str = ""
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


REPLIES = (TokenCreated, TokenList)
