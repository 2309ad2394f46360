"""The head's storage seals (sealing.py) and the Redis target's password
handling: pure functions, no Redis."""

from __future__ import annotations

import hashlib

import pytest

from manta._private.head import sealing
from manta._private.head.storage import RedisTarget, StorageError, redact

TOKEN = bytes(range(32))
KEYS = sealing.StorageKeys.derive(TOKEN)


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_sealed_value_opens_only_at_its_own_table_and_key(encrypt):
    s = sealing.Sealer(KEYS, encrypt)
    blob = s.seal("kv", b"ns\0a", b"value")
    assert s.open("kv", b"ns\0a", blob) == sealing.Opened(b"value", encrypted=encrypt)
    for table, key in [("kv", b"ns\0b"), ("functions", b"ns\0a"), ("kv", b"ns\0a\0")]:
        with pytest.raises(sealing.Refused) as e:
            s.open(table, key, blob)
        assert e.value.reason == sealing.FORGED
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(sealing.Refused):
        s.open("kv", b"ns\0a", altered)
    other = sealing.Sealer(sealing.StorageKeys.derive(bytes(32)), encrypt)
    with pytest.raises(sealing.Refused):
        other.open("kv", b"ns\0a", blob)


def test_table_and_key_are_bound_without_ambiguity():
    s = sealing.Sealer(KEYS)
    blob = s.seal("k", b"va", b"x")
    with pytest.raises(sealing.Refused):  # the same bytes split differently
        s.open("kv", b"a", blob)


def test_encryption_hides_the_value_and_an_authenticated_plain_value_still_opens():
    enc = sealing.Sealer(KEYS, encrypt=True)
    blob = enc.seal("kv", b"k", b"secret-value-xyz")
    assert blob[0] == sealing.ENCRYPTED and b"secret-value-xyz" not in blob
    assert enc.seal("kv", b"k", b"same") != enc.seal("kv", b"k", b"same")  # fresh nonces
    plain = sealing.Sealer(KEYS).seal("kv", b"k", b"v")
    assert plain[0] == sealing.MAC_ONLY
    assert enc.open("kv", b"k", plain) == sealing.Opened(b"v", encrypted=False)


@pytest.mark.parametrize("blob,reason", [
    (b"", sealing.UNVERSIONED),
    (b"\x80\x05raw pickle", sealing.UNVERSIONED),
    (b"\x93\x01\x02\x03", sealing.UNVERSIONED),  # an older manta's msgpack record
    (b"\x01" + b"\0" * 31, sealing.FORGED),  # too short for its MAC
    (b"\x02" + b"\0" * 27, sealing.FORGED),
    (b"\x01" + b"\0" * 32 + b"value", sealing.FORGED),
])
def test_values_in_no_format_or_too_short_are_refused_never_parsed(blob, reason):
    with pytest.raises(sealing.Refused) as e:
        sealing.Sealer(KEYS, encrypt=True).open("kv", b"k", blob)
    assert e.value.reason == reason


def test_open_tables_keeps_what_opens_and_counts_the_rest_by_table_and_reason():
    s = sealing.Sealer(KEYS)
    raw = {
        "kv": {b"a": s.seal("kv", b"a", b"1"), b"b": s.seal("kv", b"a", b"2"), b"c": b"old"},
        "functions": {b"f": sealing.Sealer(KEYS, True).seal("functions", b"f", b"blob")},
    }
    opened = sealing.open_tables(s, raw)
    assert opened.tables == {"kv": {b"a": b"1"}, "functions": {b"f": b"blob"}}
    assert opened.refused == {"kv": {sealing.FORGED: 1, sealing.UNVERSIONED: 1}}
    assert opened.plain == [("kv", b"a")] and opened.encrypted == 1
    line = sealing.describe_refused("kv", opened.refused["kv"], 3, "redis at h:1")
    assert line.startswith("storage: dropped 2 of 3 values of table 'kv' in redis at h:1, never decoded nor used")
    assert "1 did not authenticate" in line and "1 had no format version" in line


def test_the_owner_record_is_salted_and_reveals_no_token():
    a, b = sealing.owner_record(KEYS), sealing.owner_record(KEYS)
    assert a != b and TOKEN not in a and hashlib.sha256(TOKEN).digest() not in a
    assert sealing.owner_matches(KEYS, TOKEN, a) is True
    other = bytes(32)
    assert sealing.owner_matches(sealing.StorageKeys.derive(other), other, a) is False
    legacy = __import__("hmac").new(TOKEN, b"manta storage owner", hashlib.sha256).digest()
    assert sealing.owner_matches(KEYS, TOKEN, legacy) is True  # what older mantas stored
    assert sealing.owner_matches(KEYS, TOKEN, b"junk") is None
    assert "mac" not in repr(KEYS) and KEYS.mac.hex() not in repr(KEYS)


def test_derived_keys_differ_by_use_and_are_not_the_token():
    assert len({KEYS.mac, KEYS.encryption, KEYS.owner, TOKEN}) == 4


@pytest.mark.parametrize("url,bare,password", [
    ("redis://:pw@h:1/2", "redis://h:1/2", "pw"),
    ("redis://user:p%40ss@h:1", "redis://user@h:1", "p@ss"),
    ("rediss://h:1/0?password=pw&ssl_ca_certs=/ca.pem", "rediss://h:1/0?ssl_ca_certs=%2Fca.pem", "pw"),
    ("redis://h:1", "redis://h:1", None),
])
def test_a_password_in_the_url_is_moved_out_of_it(url, bare, password):
    target = RedisTarget.parse(url)
    assert (target.url, target.password) == (bare, password)
    assert "pw" not in repr(target) and "pw" not in target.description
    assert "pw" not in redact(url) and "p%40ss" not in redact(url)


def test_the_password_given_twice_differently_is_an_error_that_shows_neither():
    assert RedisTarget.parse("redis://:pw@h:1", "pw").password == "pw"
    with pytest.raises(StorageError) as e:
        RedisTarget.parse("redis://:pw1@h:1", "pw2")
    assert "pw1" not in str(e.value) and "pw2" not in str(e.value)


def test_descriptions_say_where_and_whether_tls():
    assert RedisTarget.parse("redis://:pw@10.0.0.5:6379/3").description == "redis at 10.0.0.5:6379/3"
    assert RedisTarget.parse("rediss://h:6380").description == "redis at h:6380 (TLS)"
    assert RedisTarget.parse("unix:///run/redis.sock").description == "redis at /run/redis.sock"
