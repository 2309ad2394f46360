"""Where the head keeps the state it needs to survive a restart.

Two backends behind one small interface: tables of byte keys and byte
values, written through on every change the head makes.

- `MemoryStorage` (the default): nothing outside the head's own tables; a
  head that dies takes the cluster with it.
- `RedisStorage` (`manta start --head --storage redis://HOST:PORT[/DB]`):
  each table is a Redis hash. A head restarted on the same address reads
  it back; nodes and drivers reconnect and carry on.

Writes are synchronous: when the head answers a request, what it changed
is already stored, so a restart never forgets an answer it gave. The head
changes little (actors, placement groups, jobs, KV, functions), so the
~0.1 ms a local Redis write costs is not on any hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import urllib.parse
from typing import Any

import msgspec

from manta._private.protocol import messages as m

log = logging.getLogger(__name__)

TABLES = ("meta", "functions", "jobs", "actors", "pgs", "nodes", "kv", "tokens")


class ActorRecord(msgspec.Struct, array_like=True, frozen=True):
    spec: m.ActorSpec
    state: m.ActorStatus
    address: str
    worker_id: bytes
    node_id: bytes
    epoch: int
    restarts: int
    death_cause: str
    no_restart: bool


class PGRecord(msgspec.Struct, array_like=True, frozen=True):
    spec: m.PlacementGroupSpec
    state: m.PGStatus
    nodes: list[bytes]
    error: str


encode = msgspec.msgpack.Encoder().encode
_decoders: dict[type, Any] = {}


def decode(kind: type, data: bytes) -> Any:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    return dec.decode(data)


class StorageError(RuntimeError):
    """The storage backend cannot be used; the message says why."""


class Storage:
    """In-memory: the head's tables are the only copy."""

    persistent = False
    description = "in memory"

    def load(self) -> dict[str, dict[bytes, bytes]]:
        return {t: {} for t in TABLES}

    def put(self, table: str, key: bytes, value: bytes) -> None:
        pass

    def delete(self, table: str, key: bytes) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check_token(self, token: bytes) -> None:
        """Refuses state written by a cluster with another token."""


MemoryStorage = Storage


class RedisStorage(Storage):
    persistent = True

    def __init__(self, url: str, prefix: str = "manta:") -> None:
        try:
            import redis
        except ImportError:
            raise StorageError("--storage redis://... needs the redis package: pip install redis") from None
        where = urllib.parse.urlsplit(url)
        db = where.path if where.path not in ("", "/") and where.netloc else ""
        # Never the password: this text is shown by `manta status` and logged.
        self.description = f"redis at {where.netloc.rpartition('@')[2] or where.path}{db}"
        self.prefix = prefix
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            self.client.ping()
        except (redis.RedisError, ValueError) as e:
            raise StorageError(f"cannot use the storage {url!r}: {e}") from None
        self._errors = redis.RedisError

    def _key(self, table: str) -> str:
        return self.prefix + table

    def load(self) -> dict[str, dict[bytes, bytes]]:
        return {t: dict(self.client.hgetall(self._key(t))) for t in TABLES}  # type: ignore[arg-type]

    def put(self, table: str, key: bytes, value: bytes) -> None:
        try:
            self.client.hset(self._key(table), key, value)
        except self._errors as e:
            # The head keeps serving from memory; only a restart would lose this.
            log.error("storage write failed (%s/%s): %s", table, key.hex()[:16], e)

    def delete(self, table: str, key: bytes) -> None:
        try:
            self.client.hdel(self._key(table), key)
        except self._errors as e:
            log.error("storage delete failed (%s): %s", table, e)

    def clear(self) -> None:
        self.client.delete(*(self._key(t) for t in TABLES))

    def close(self) -> None:
        self.client.close()

    def check_token(self, token: bytes) -> None:
        # A keyed digest, never the token: Redis may be readable by others.
        tag = hmac.new(token, b"manta storage owner", hashlib.sha256).digest()
        stored = self.client.hget(self._key("meta"), b"owner")
        if stored is None:
            self.client.hset(self._key("meta"), b"owner", tag)
        elif not hmac.compare_digest(stored, tag):  # type: ignore[arg-type]
            raise StorageError(
                f"the state in {self.description} belongs to a cluster with another token: "
                f"restart the head with that cluster's --token-file, or clear the storage"
            )


def open_storage(url: str) -> Storage:
    if not url or url == "memory":
        return MemoryStorage()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStorage(url)
    raise StorageError(f"unknown storage {url!r}: use redis://HOST:PORT[/DB] (or leave it out for memory)")
