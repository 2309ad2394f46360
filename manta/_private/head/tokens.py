"""People's tokens, as the head knows them: role, namespaces, expiry, revocation.

A token's secret is derived from the cluster secret and its id
(`ClusterKeys.token_secret`), so the table holds no secret: reading the
head's storage gives no token. `local-admin`, the cluster owner's, is not
in the table and cannot be revoked; stopping the cluster is how it ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from msgspec.structs import replace

from manta._private.auth.credentials import LOCAL_ADMIN, AuthFailed, ClusterKeys
from manta._private.protocol.auth_messages import Quota, TokenInfo
from manta._private.protocol.identity import Kind, Principal, Role

# What a person's token may be given: the cluster's own role is not one.
GRANTABLE = (Role.VIEW, Role.SUBMIT, Role.ADMIN)


class TokenTable:
    def __init__(self, keys: ClusterKeys, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self.tokens: dict[str, TokenInfo] = {}

    def resolve(self, token_id: str) -> tuple[bytes, Principal]:
        if token_id == LOCAL_ADMIN:
            return self.keys.token_secret(token_id), Principal(
                kind=Kind.PERSON, role=Role.ADMIN, name="the cluster's owner", token_id=token_id,
            )
        info = self.tokens.get(token_id)
        if info is None:
            raise AuthFailed(f"token {token_id} is not known to this cluster")
        if info.revoked:
            raise AuthFailed(f"token {token_id} was revoked")
        if info.expires and info.expires < self.clock():
            raise AuthFailed(f"token {token_id} expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.expires))}")
        return self.keys.token_secret(token_id), self.principal(info)

    @staticmethod
    def principal(info: TokenInfo) -> Principal:
        return Principal(
            kind=Kind.PERSON, role=info.role, name=f"token {info.token_id}", namespaces=info.namespaces,
            token_id=info.token_id, expires=info.expires,
        )

    def create(
        self, role: Role, namespaces: tuple[str, ...], expires_s: float, note: str, created_by: str,
        quota: Quota = Quota(),
    ) -> tuple[str, TokenInfo]:
        if role not in GRANTABLE:
            raise ValueError(f"a token's role is one of admin, submit, view; not {role.name.lower()}")
        if expires_s < 0:
            raise ValueError(f"a token's lifetime must be positive, not {expires_s:g} s")
        for ns in namespaces:
            if not ns or len(ns) > 256:
                raise ValueError(f"bad namespace {ns!r} for a token")
        for name in ("max_actors", "max_cpus", "max_kv_bytes"):
            v = getattr(quota, name)
            if v is not None and not (0 <= v < float("inf")):
                raise ValueError(f"a token's quota {name} must be a finite number of at least 0, not {v!r}")
        token_id = os.urandom(8).hex()
        now = self.clock()
        info = TokenInfo(
            token_id=token_id, role=role, namespaces=tuple(namespaces), created=now,
            expires=now + expires_s if expires_s else 0.0, note=note[:200], created_by=created_by, quota=quota,
        )
        self.tokens[token_id] = info
        return self.keys.token(token_id), info

    def revoke(self, token_id: str) -> TokenInfo:
        info = self.tokens.get(token_id)
        if info is None:
            raise KeyError(f"token {token_id} is not known to this cluster"
                           + (" (the owner's local-admin token cannot be revoked)" if token_id == LOCAL_ADMIN else ""))
        info = self.tokens[token_id] = replace(info, revoked=True)
        return info
