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

Redis is not trusted with anything it could turn against the cluster:
- every value is sealed (`sealing.py`) under keys derived from the cluster
  token, so one planted or altered in Redis is refused on restore, never
  decoded; with `--storage-encryption` values are also encrypted;
- the password comes from a file, the environment or an inherited pipe,
  and is never part of a URL shown, a record written or an error raised
  (`RedisTarget` holds it apart from the URL);
- `rediss://` verifies the server's certificate (`--redis-ca`, else the
  system's CAs) and its host name.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import msgspec

from manta._private.protocol import messages as m

if TYPE_CHECKING:
    from manta._private.head import sealing

log = logging.getLogger(__name__)

# "submissions", "job_packages": the jobs of the REST API and the Ray-named packages their tokens
# uploaded (head/jobs/), read by the job manager, not by Head._restore.
TABLES = ("meta", "functions", "jobs", "actors", "pgs", "nodes", "kv", "tokens", "submissions", "job_packages")


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
    """The storage backend cannot be used; the message says why (never a password)."""


class Storage:
    """In-memory: the head's tables are the only copy."""

    persistent = False
    description = "in memory"

    def load(self) -> dict[str, dict[bytes, bytes]]:
        return {t: {} for t in TABLES}

    def load_table(self, table: str) -> dict[bytes, bytes]:
        """One table, read again (what `load` gave for it, for a part of the head that starts later)."""
        return {}

    def put(self, table: str, key: bytes, value: bytes) -> None:
        pass

    def delete(self, table: str, key: bytes) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check_token(self, token: bytes) -> None:
        """Binds the storage to the cluster's token: refuses state written
        under another token, and derives the keys its values are sealed with."""


MemoryStorage = Storage


@dataclass(frozen=True)
class RedisTarget:
    """A Redis to keep the head's state in. `url` never holds the password:
    `parse` moves one given in the URL out of it, into `password`."""

    url: str
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # CA certificates (PEM) to verify a rediss:// server with

    @classmethod
    def parse(cls, url: str, password: str | None = None, ca: str | None = None) -> RedisTarget:
        where = urllib.parse.urlsplit(url)
        in_url = urllib.parse.unquote(where.password) if where.password else None
        query = urllib.parse.parse_qsl(where.query, keep_blank_values=True)
        in_url = in_url or next((v for k, v in query if k == "password"), None)
        if in_url is not None and password is not None and in_url != password:
            raise StorageError("the Redis password is given twice, differently: in the URL and by "
                               "--redis-password-file/MANTA_REDIS_PASSWORD; give it once")
        host = where.netloc.rpartition("@")[2]
        netloc = f"{where.username}@{host}" if where.username else host
        bare = where._replace(netloc=netloc, query=urllib.parse.urlencode([(k, v) for k, v in query if k != "password"]))
        return cls(urllib.parse.urlunsplit(bare), password if password is not None else in_url, ca)

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    @property
    def description(self) -> str:
        """Where, as `manta status` shows it and logs say it."""
        where = urllib.parse.urlsplit(self.url)
        db = where.path if where.path not in ("", "/") and where.netloc else ""
        return f"redis at {where.netloc.rpartition('@')[2] or where.path}{db}{' (TLS)' if self.tls else ''}"


def redact(url: str) -> str:
    """`url` as it may be shown: any password in it replaced by ***."""
    where = urllib.parse.urlsplit(url)
    netloc = where.netloc
    if where.password is not None:
        netloc = f"{where.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = [(k, "***" if k == "password" else v) for k, v in urllib.parse.parse_qsl(where.query, True)]
    return urllib.parse.urlunsplit(where._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="*")))


def connect(target: RedisTarget) -> Any:
    """A redis client that answered a PING; StorageError, saying why, if none can be had."""
    try:
        import redis
    except ImportError:
        raise StorageError("--storage redis://... needs the redis package: pip install redis") from None
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
    if target.password is not None:
        options["password"] = target.password
    if target.ca is not None:
        if not target.tls:
            raise StorageError(f"--redis-ca is for a Redis reached over TLS: use rediss://, not {target.url}")
        if not os.access(target.ca, os.R_OK):
            raise StorageError(f"cannot read the Redis CA file {target.ca}")
        options["ssl_ca_certs"] = target.ca
    try:
        client = redis.Redis.from_url(target.url, **options)
        client.ping()
    except redis.AuthenticationError as e:
        raise StorageError(_hidden(_auth_failure(target, str(e)), target)) from None
    except (redis.RedisError, ValueError) as e:
        raise StorageError(_hidden(_failure(target, str(e)), target)) from None
    return client


def _auth_failure(target: RedisTarget, said: str) -> str:
    if target.password is None:
        return (f"{target.description} needs a password: give it with --redis-password-file PATH "
                f"or MANTA_REDIS_PASSWORD (Redis said: {said})")
    return f"wrong Redis password for {target.description} (Redis said: {said})"


def _failure(target: RedisTarget, said: str) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in said:
        if target.ca:
            trusted = f"the CA in {target.ca} (--redis-ca)"
        elif "ssl_ca_certs=" in target.url:
            trusted = "the CA of the URL's ssl_ca_certs"
        else:
            trusted = "the system's CAs (give the server's CA with --redis-ca PATH)"
        return f"the TLS certificate of {target.description} is not trusted by {trusted}: {said}"
    if target.tls and any(word in said for word in ("SSL", "EOF", "Timeout")):
        # A plaintext Redis takes the TLS hello for a command and waits for more.
        return f"no TLS handshake with {target.description} (is it a plaintext port? then use redis://): {said}"
    if not target.tls and ("reset by peer" in said or "Connection closed" in said):
        return f"cannot use the storage {target.description}: {said} (a TLS port? then use rediss://)"
    return f"cannot use the storage {target.description}: {said}"


def _hidden(text: str, target: RedisTarget) -> str:
    # Redis does not echo passwords, but what a library says is not ours to vouch for.
    return text.replace(target.password, "***") if target.password else text


class RedisStorage(Storage):
    persistent = True

    def __init__(self, target: RedisTarget, *, encrypt: bool = False, prefix: str = "manta:") -> None:
        import redis

        self.target = target
        self.description = target.description
        self.prefix = prefix
        self.encrypt = encrypt
        self.client = connect(target)
        self._errors = redis.RedisError
        # Set by check_token: nothing is read or written before the token is known.
        self._sealer: sealing.Sealer | None = None

    def _key(self, table: str) -> str:
        return self.prefix + table

    def _bound(self) -> sealing.Sealer:
        if self._sealer is None:
            raise RuntimeError("internal error: the storage was used before check_token bound it to a token")
        return self._sealer

    def load(self) -> dict[str, dict[bytes, bytes]]:
        from manta._private.head import sealing  # Redis storage only: other heads load no cryptography

        sealer = self._bound()
        raw = {t: dict(self.client.hgetall(self._key(t))) for t in TABLES if t != "meta"}
        opened = sealing.open_tables(sealer, raw)  # type: ignore[arg-type]
        for table, counts in opened.refused.items():
            log.warning("%s", sealing.describe_refused(table, counts, len(raw[table]), self.description))
        if opened.encrypted and not sealer.encrypt:
            # Never quietly back to plaintext: once encrypted, it stays so.
            log.info("storage: %s holds encrypted values, so new ones are encrypted too "
                     "(as with --storage-encryption)", self.description)
            sealer = self._sealer = replace(sealer, encrypt=True)
        if sealer.encrypt and opened.plain:
            for table, key in opened.plain:
                self.put(table, key, opened.tables[table][key])
            log.info("storage: encrypted %d values stored unencrypted before", len(opened.plain))
        return {"meta": {}, **opened.tables}

    def load_table(self, table: str) -> dict[bytes, bytes]:
        from manta._private.head import sealing  # Redis storage only: other heads load no cryptography

        raw = {table: dict(self.client.hgetall(self._key(table)))}
        opened = sealing.open_tables(self._bound(), raw)  # type: ignore[arg-type]
        for name, counts in opened.refused.items():
            log.warning("%s", sealing.describe_refused(name, counts, len(raw[name]), self.description))
        return opened.tables.get(table, {})

    def put(self, table: str, key: bytes, value: bytes) -> None:
        try:
            self.client.hset(self._key(table), key, self._bound().seal(table, key, value))
        except self._errors as e:
            # The head keeps serving from memory; only a restart would lose this.
            log.error("storage write failed (%s/%s): %s", table, key.hex()[:16], _hidden(str(e), self.target))

    def delete(self, table: str, key: bytes) -> None:
        try:
            self.client.hdel(self._key(table), key)
        except self._errors as e:
            log.error("storage delete failed (%s): %s", table, _hidden(str(e), self.target))

    def clear(self) -> None:
        self.client.delete(*(self._key(t) for t in TABLES))

    def close(self) -> None:
        self.client.close()

    def check_token(self, token: bytes) -> None:
        from manta._private.head import sealing  # Redis storage only: other heads load no cryptography

        # A salted MAC under a key derived from the token, never the token:
        # Redis may be readable by others.
        keys = sealing.StorageKeys.derive(token)
        stored = self.client.hget(self._key("meta"), b"owner")
        if stored is None:
            self.client.hset(self._key("meta"), b"owner", sealing.owner_record(keys))
        else:
            match = sealing.owner_matches(keys, token, stored)  # type: ignore[arg-type]
            if match is None:
                raise StorageError(
                    f"the state in {self.description} has an owner record in no format manta knows: "
                    f"it was not written by manta; clear the storage to start afresh"
                )
            if not match:
                raise StorageError(
                    f"the state in {self.description} belongs to a cluster with another token: "
                    f"restart the head with that cluster's --token-file, or clear the storage"
                )
            if len(stored) != len(sealing.owner_record(keys)):  # type: ignore[arg-type]
                self.client.hset(self._key("meta"), b"owner", sealing.owner_record(keys))  # an older manta's
        self._sealer = sealing.Sealer(keys, self.encrypt)


def open_storage(url: str, *, password: str | None = None, ca: str | None = None, encrypt: bool = False) -> Storage:
    if not url or url == "memory":
        return MemoryStorage()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStorage(RedisTarget.parse(url, password, ca), encrypt=encrypt)
    raise StorageError(f"unknown storage {redact(url)!r}: use redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB] "
                       f"(or leave it out for memory)")
