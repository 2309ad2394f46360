"""What makes a value the head wrote to its storage trustworthy when it reads it back.

Whoever can write to Redis could otherwise plant a pickled function or a
forged actor record that the next head would restore and run. So every
value the head stores is sealed under keys derived (HKDF) from the cluster
token, which Redis never sees, and bound to its table and key:

    version 1   b"\\x01" + HMAC-SHA256(mac key, context + value) + value
    version 2   b"\\x02" + nonce (12) + AES-256-GCM(value, associated data = context)
                (`--storage-encryption`: a reader of Redis learns nothing either)

    context     b"manta storage" + version + len(table) (2) + table + len(key) (4) + key

A value moved to another key or table, altered, or written by anyone
without the token fails to open and is never decoded. The leading version
byte tells these formats from the unversioned values older mantas wrote,
which are refused rather than mis-parsed.

Pure functions, no I/O: `storage.py` does the Redis side.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from manta._private.auth.ed25519 import hkdf_sha256

MAC_ONLY = 1
ENCRYPTED = 2
_MAC_SIZE = 32
_NONCE_SIZE = 12
_GCM_TAG_SIZE = 16
_OWNER_SALT_SIZE = 16

# Why a value was refused: each reason's words, as the head logs them.
FORGED = "forged"
UNVERSIONED = "unversioned"
REASONS = {
    FORGED: "did not authenticate (written without this cluster's key, altered, or moved from another key)",
    UNVERSIONED: "had no format version (written by an older manta, which did not authenticate its "
                 "storage, or not by manta)",
}


class Refused(Exception):
    """A stored value that did not open; `reason` is FORGED or UNVERSIONED."""

    def __init__(self, reason: str) -> None:
        super().__init__(REASONS[reason])
        self.reason = reason


def _derive(token: bytes, label: bytes) -> bytes:
    return hkdf_sha256(token, label)


@dataclass(frozen=True)
class StorageKeys:
    """The head's storage keys: one per use, none of them the token."""

    mac: bytes
    encryption: bytes
    owner: bytes

    @classmethod
    def derive(cls, token: bytes) -> StorageKeys:
        return cls(
            mac=_derive(token, b"manta storage mac"),
            encryption=_derive(token, b"manta storage encryption"),
            owner=_derive(token, b"manta storage owner"),
        )

    def __repr__(self) -> str:  # never the keys, wherever this ends up printed
        return "StorageKeys(...)"


def _context(version: int, table: str, key: bytes) -> bytes:
    name = table.encode()
    return (b"manta storage" + bytes([version]) + len(name).to_bytes(2, "big") + name
            + len(key).to_bytes(4, "big") + key)


@dataclass(frozen=True)
class Opened:
    value: bytes
    encrypted: bool


@dataclass(frozen=True)
class Sealer:
    keys: StorageKeys
    encrypt: bool = False

    def seal(self, table: str, key: bytes, value: bytes) -> bytes:
        if self.encrypt:
            nonce = os.urandom(_NONCE_SIZE)
            sealed = AESGCM(self.keys.encryption).encrypt(nonce, value, _context(ENCRYPTED, table, key))
            return bytes([ENCRYPTED]) + nonce + sealed
        return bytes([MAC_ONLY]) + self._mac(table, key, value) + value

    def _mac(self, table: str, key: bytes, value: bytes) -> bytes:
        mac = hmac.new(self.keys.mac, _context(MAC_ONLY, table, key), hashlib.sha256)
        mac.update(value)  # not context + value: a function blob is not copied to be hashed
        return mac.digest()

    def open(self, table: str, key: bytes, blob: bytes) -> Opened:
        """The value sealed at (table, key); raises Refused if it is not one."""
        version = blob[0] if blob else None
        if version == MAC_ONLY and len(blob) >= 1 + _MAC_SIZE:
            tag, value = blob[1:1 + _MAC_SIZE], blob[1 + _MAC_SIZE:]
            if hmac.compare_digest(tag, self._mac(table, key, value)):
                return Opened(value, encrypted=False)
            raise Refused(FORGED)
        if version == ENCRYPTED and len(blob) >= 1 + _NONCE_SIZE + _GCM_TAG_SIZE:
            nonce, sealed = blob[1:1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE:]
            try:
                value = AESGCM(self.keys.encryption).decrypt(nonce, sealed, _context(ENCRYPTED, table, key))
            except InvalidTag:
                raise Refused(FORGED) from None
            return Opened(value, encrypted=True)
        # A known version but too short to hold its MAC is a forgery, not an old value.
        raise Refused(FORGED if version in (MAC_ONLY, ENCRYPTED) else UNVERSIONED)


@dataclass(frozen=True)
class OpenedTables:
    tables: dict[str, dict[bytes, bytes]]
    # table -> reason -> how many values were refused
    refused: dict[str, dict[str, int]]
    # (table, key) of values that were sealed without encryption
    plain: list[tuple[str, bytes]]
    encrypted: int  # how many values were encrypted


def open_tables(sealer: Sealer, raw: dict[str, dict[bytes, bytes]]) -> OpenedTables:
    """Every value of `raw` that opens; counts of the rest, by table and reason."""
    tables: dict[str, dict[bytes, bytes]] = {}
    refused: dict[str, dict[str, int]] = {}
    plain: list[tuple[str, bytes]] = []
    encrypted = 0
    for table, values in raw.items():
        kept = tables[table] = {}
        for key, blob in values.items():
            try:
                opened = sealer.open(table, key, blob)
            except Refused as e:
                counts = refused.setdefault(table, {})
                counts[e.reason] = counts.get(e.reason, 0) + 1
                continue
            kept[key] = opened.value
            if opened.encrypted:
                encrypted += 1
            else:
                plain.append((table, key))
    return OpenedTables(tables, refused, plain, encrypted)


def describe_refused(table: str, counts: dict[str, int], total: int, where: str) -> str:
    """The one log line for a table's refused values."""
    parts = [f"{n} {REASONS[reason]}" for reason, n in sorted(counts.items())]
    dropped = sum(counts.values())
    return (f"storage: dropped {dropped} of {total} values of table {table!r} in {where}, never decoded "
            f"nor used: {'; '.join(parts)}")


# -- the owner record: which token the stored state belongs to ------------------

def owner_record(keys: StorageKeys, salt: bytes | None = None) -> bytes:
    """b"\\x01" + salt + HMAC(owner key, salt): tells a token's state without revealing the token."""
    salt = salt if salt is not None else os.urandom(_OWNER_SALT_SIZE)
    return bytes([MAC_ONLY]) + salt + hmac.new(keys.owner, salt, hashlib.sha256).digest()


def owner_matches(keys: StorageKeys, token: bytes, record: bytes) -> bool | None:
    """Whether `record` was made with this token; None if it is in no format known."""
    if len(record) == 1 + _OWNER_SALT_SIZE + _MAC_SIZE and record[0] == MAC_ONLY:
        salt = record[1:1 + _OWNER_SALT_SIZE]
        return hmac.compare_digest(record, owner_record(keys, salt))
    if len(record) == _MAC_SIZE:
        # What mantas before version 1 stored: HMAC keyed by the token itself.
        return hmac.compare_digest(record, hmac.new(token, b"manta storage owner", hashlib.sha256).digest())
    return None
