"""Ed25519 keys and HKDF for the handshake, on the OpenSSL Python's ssl already loads.

Every manta process signs and checks Ed25519 in its handshakes (credentials,
handshake). Drivers and workers need nothing else of a crypto library, and
the cryptography package's Rust extension cost each of them 6.6 MB of RSS and
14 ms at import (measured: RSS before and after the import, -X importtime).
With four such processes in an idle cluster that was a tenth of the whole
cluster's footprint. The libcrypto that `_hashlib` links against is in the
process anyway (asyncio imports ssl): its EVP calls do the same Ed25519
(RFC 8032), and `hmac` does HKDF (RFC 5869). The head and the agents still
import cryptography for what only they do (x509, AES-GCM, Poly1305).

Where this Python's libcrypto cannot be found or has no raw Ed25519 keys
(OpenSSL before 1.1.1), the same classes use cryptography instead. Both
paths are unit-tested against each other.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
from typing import Any

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NID_ED25519 = 1087  # EVP_PKEY_ED25519, fixed in OpenSSL's obj_mac.h since 1.1.1


class InvalidSignature(Exception):
    """A signature does not verify under the key."""


def hkdf_sha256(secret: bytes, info: bytes, size: int = 32) -> bytes:
    """HKDF-SHA256 with no salt (RFC 5869), as cryptography's HKDF(salt=None) computes it."""
    if not 1 <= size <= 255 * 32:
        raise ValueError(f"HKDF-SHA256 makes 1 to {255 * 32} bytes, not {size}")
    prk = hmac.new(bytes(32), secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < size:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:size]


class _OpenSSL:
    """The few EVP calls Ed25519 needs, bound once per process."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        p, i, sz, buf = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
        self.lib = lib
        self.new_private = self._bind("EVP_PKEY_new_raw_private_key", p, [i, p, buf, sz])
        self.new_public = self._bind("EVP_PKEY_new_raw_public_key", p, [i, p, buf, sz])
        self.get_public = self._bind("EVP_PKEY_get_raw_public_key", i, [p, buf, ctypes.POINTER(sz)])
        self.free_key = self._bind("EVP_PKEY_free", None, [p])
        self.new_ctx = self._bind("EVP_MD_CTX_new", p, [])
        self.free_ctx = self._bind("EVP_MD_CTX_free", None, [p])
        self.sign_init = self._bind("EVP_DigestSignInit", i, [p, p, p, p, p])
        self.sign = self._bind("EVP_DigestSign", i, [p, buf, ctypes.POINTER(sz), buf, sz])
        self.verify_init = self._bind("EVP_DigestVerifyInit", i, [p, p, p, p, p])
        self.verify = self._bind("EVP_DigestVerify", i, [p, buf, sz, buf, sz])
        self.clear_errors = self._bind("ERR_clear_error", None, [])

    def _bind(self, name: str, restype: Any, argtypes: list[Any]) -> Any:
        f = getattr(self.lib, name)
        f.restype, f.argtypes = restype, argtypes
        return f

    def key(self, raw: bytes, private: bool) -> int:
        make = self.new_private if private else self.new_public
        pkey = make(_NID_ED25519, None, raw, len(raw))
        if not pkey:
            self.clear_errors()  # the error queue is per thread and shared with the ssl module
            raise ValueError(f"not a raw Ed25519 {'private' if private else 'public'} key")
        return int(pkey)

    def public_of(self, pkey: int) -> bytes:
        out = ctypes.create_string_buffer(KEY_BYTES)
        n = ctypes.c_size_t(KEY_BYTES)
        if self.get_public(pkey, out, ctypes.byref(n)) != 1 or n.value != KEY_BYTES:
            self.clear_errors()
            raise ValueError("OpenSSL gave no public half of the key")
        return out.raw

    def sign_with(self, pkey: int, data: bytes) -> bytes:
        data = bytes(memoryview(data))  # c_char_p takes bytes only; an int is refused, not zeros
        ctx = self.new_ctx()
        if not ctx:
            self.clear_errors()
            raise MemoryError("EVP_MD_CTX_new")
        try:
            out = ctypes.create_string_buffer(SIGNATURE_BYTES)
            n = ctypes.c_size_t(SIGNATURE_BYTES)
            if self.sign_init(ctx, None, None, None, pkey) != 1 or self.sign(ctx, out, ctypes.byref(n), data, len(data)) != 1:
                self.clear_errors()
                raise ValueError("OpenSSL failed to sign")
            return out.raw[: n.value]
        finally:
            self.free_ctx(ctx)

    def verify_with(self, pkey: int, sig: bytes, data: bytes) -> bool:
        sig, data = bytes(memoryview(sig)), bytes(memoryview(data))
        ctx = self.new_ctx()
        if not ctx:
            self.clear_errors()
            raise MemoryError("EVP_MD_CTX_new")
        try:
            ok = self.verify_init(ctx, None, None, None, pkey) == 1 and self.verify(ctx, sig, len(sig), data, len(data)) == 1
            if not ok:
                self.clear_errors()
            return ok
        finally:
            self.free_ctx(ctx)


_backend: list[_OpenSSL | None] = []  # [] not chosen yet; [None] cryptography's


def _openssl() -> _OpenSSL | None:
    """OpenSSL's, or None for cryptography's; chosen at the first key, not at import.

    No lock: two threads choosing at once both choose the same, and a lock
    held by another thread across a fork would hang the child at its first key."""
    if not _backend:
        _backend[:] = [_load()]
    return _backend[0]


# RFC 8032, 7.1, TEST 1: what a backend must reproduce before it is trusted.
_VECTOR = (
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
    bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
    bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
)


def _load() -> _OpenSSL | None:
    try:
        import _hashlib

        # dlsym on _hashlib's handle also searches what it links: its libcrypto.
        ossl = _OpenSSL(ctypes.CDLL(_hashlib.__file__))
        secret, public, sig = _VECTOR
        key = PrivateKey(secret, ossl)
        pub = key.public_key()
        trusted = (
            pub.raw() == public and key.sign(b"") == sig and pub.verify_ok(sig, b"")
            and not pub.verify_ok(sig, b"x") and not pub.verify_ok(bytes([sig[0] ^ 1]) + sig[1:], b"")
            and not pub.verify_ok(sig[:-1], b"")
        )
        return ossl if trusted else None
    except (ImportError, OSError, AttributeError, ValueError):
        return None


class _Key:
    """A raw key and, on the OpenSSL path, its EVP_PKEY (freed with the key)."""

    __slots__ = ("_raw", "_ossl", "_pkey", "_theirs")
    _private = False
    _theirs: Any  # cryptography's key, on that path

    def __init__(self, raw: bytes, ossl: _OpenSSL | None) -> None:
        raw = bytes(raw)
        self._raw, self._ossl, self._pkey, self._theirs = raw, ossl, 0, None
        if len(raw) != KEY_BYTES:
            kind = "private" if self._private else "public"
            raise ValueError(f"an Ed25519 {kind} key is {KEY_BYTES} bytes, not {len(raw)}")
        if ossl is not None:
            self._pkey = ossl.key(raw, private=self._private)
        else:
            from cryptography.hazmat.primitives.asymmetric import ed25519 as theirs

            self._theirs = (theirs.Ed25519PrivateKey.from_private_bytes(raw) if self._private
                            else theirs.Ed25519PublicKey.from_public_bytes(raw))

    def raw(self) -> bytes:
        return self._raw

    # A key owns its EVP_PKEY: a copy sharing it would free it twice. Keys
    # never change, so a copy is the key itself; and key material is not
    # pickled (neither are cryptography's keys).
    def __copy__(self) -> _Key:
        return self

    def __deepcopy__(self, memo: Any) -> _Key:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle an Ed25519 {'private' if self._private else 'public'} key")

    def __del__(self) -> None:
        if getattr(self, "_pkey", 0) and self._ossl is not None:
            try:
                self._ossl.free_key(self._pkey)
            except Exception:  # interpreter shutdown
                pass
            self._pkey = 0


class PublicKey(_Key):
    __slots__ = ()

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> PublicKey:
        return cls(bytes(raw), _openssl())

    def verify_ok(self, sig: bytes, data: bytes) -> bool:
        if self._ossl is not None:
            return self._ossl.verify_with(self._pkey, sig, data)
        from cryptography.exceptions import InvalidSignature as Theirs

        try:
            self._theirs.verify(sig, data)
        except Theirs:
            return False
        return True

    def verify(self, sig: bytes, data: bytes) -> None:
        if not self.verify_ok(sig, data):
            raise InvalidSignature("the signature does not verify")


class PrivateKey(_Key):
    __slots__ = ()
    _private = True

    @classmethod
    def generate(cls) -> PrivateKey:
        # An Ed25519 private key is 32 random bytes (RFC 8032, 5.1.5).
        return cls(os.urandom(KEY_BYTES), _openssl())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> PrivateKey:
        return cls(bytes(raw), _openssl())

    def sign(self, data: bytes) -> bytes:
        if self._ossl is not None:
            return self._ossl.sign_with(self._pkey, data)
        return self._theirs.sign(data)

    def public_key(self) -> PublicKey:
        if self._ossl is not None:
            return PublicKey(self._ossl.public_of(self._pkey), self._ossl)
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return PublicKey(self._theirs.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), None)
