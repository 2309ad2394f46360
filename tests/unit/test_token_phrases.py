"""Cluster tokens as given: 64 hex digits kept as they are, a phrase stretched."""

from __future__ import annotations

import hashlib

from manta._private.auth.credentials import PHRASE_SALT, parse_token

TOKEN = bytes(range(32))


def test_a_hex_token_is_kept_and_a_phrase_is_stretched_with_salted_scrypt():
    assert parse_token(TOKEN.hex()) == TOKEN
    assert parse_token(f"  {TOKEN.hex()}\n") == TOKEN
    phrase = "correct horse battery staple"
    token = parse_token(phrase)
    assert len(token) == 32 and token == parse_token(phrase + "\n")
    assert token != hashlib.sha256(phrase.encode()).digest()
    assert token == hashlib.scrypt(phrase.encode(), salt=PHRASE_SALT, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32)
    assert parse_token("another phrase") != token
