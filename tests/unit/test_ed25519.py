"""Ed25519 on the ssl module's libcrypto, checked against RFC 8032 and the cryptography package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from manta._private.auth import ed25519

# RFC 8032, 7.1, TEST 1 and TEST 2.
VECTORS = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


@pytest.fixture(params=["openssl", "cryptography"])
def backend(request):
    if request.param == "openssl":
        ossl = ed25519._openssl()
        if ossl is None:
            pytest.skip("this Python's libcrypto has no raw Ed25519 keys")
        return ossl
    return None


@pytest.mark.parametrize("secret,public,message,signature", VECTORS)
def test_rfc_8032_vectors(backend, secret, public, message, signature):
    key = ed25519.PrivateKey(bytes.fromhex(secret), backend)
    assert key.public_key().raw() == bytes.fromhex(public)
    assert key.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    assert ed25519.PublicKey(bytes.fromhex(public), backend).verify_ok(bytes.fromhex(signature), bytes.fromhex(message))


def test_signatures_agree_with_the_cryptography_package(backend):
    for _ in range(20):
        key = ed25519.PrivateKey(os.urandom(32), backend)
        data = os.urandom(100)
        theirs = Ed25519PrivateKey.from_private_bytes(key.raw())
        assert key.sign(data) == theirs.sign(data)  # Ed25519 signatures are deterministic
        Ed25519PublicKey.from_public_bytes(key.public_key().raw()).verify(key.sign(data), data)
        assert key.public_key().verify_ok(theirs.sign(data), data)


def test_a_changed_message_signature_or_key_fails(backend):
    key = ed25519.PrivateKey(os.urandom(32), backend)
    pub = key.public_key()
    sig = key.sign(b"the pass")
    assert pub.verify_ok(sig, b"the pass")
    assert not pub.verify_ok(sig, b"the pasS")
    assert not pub.verify_ok(bytes([sig[0] ^ 1]) + sig[1:], b"the pass")
    assert not pub.verify_ok(sig[:63], b"the pass")
    assert not ed25519.PrivateKey(os.urandom(32), backend).public_key().verify_ok(sig, b"the pass")
    with pytest.raises(ed25519.InvalidSignature):
        pub.verify(sig, b"another")


def test_keys_of_the_wrong_size_are_refused(backend):
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519.PrivateKey(b"short", backend)
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519.PublicKey(bytes(33), backend)


def test_generated_keys_differ_and_sign():
    a, b = ed25519.PrivateKey.generate(), ed25519.PrivateKey.generate()
    assert a.raw() != b.raw()
    assert ed25519.PublicKey.from_public_bytes(a.public_key().raw()).verify_ok(a.sign(b"x"), b"x")


@pytest.mark.parametrize("size", [16, 32, 48, 64])
def test_hkdf_is_the_cryptography_packages(size):
    secret = os.urandom(32)
    expected = HKDF(algorithm=SHA256(), length=size, salt=None, info=b"manta label").derive(secret)
    assert ed25519.hkdf_sha256(secret, b"manta label", size) == expected


def test_a_driver_and_its_handshakes_load_no_cryptography_package():
    # What the module saves: a process that only signs handshakes keeps the
    # cryptography package's 6.6 MB out (a regression would be silent otherwise).
    code = ("import sys; from manta._private.auth import credentials, handshake; "
            "from manta._private.runtime import worker_main; "
            "keys = credentials.ClusterKeys(bytes(32)); cred = keys.node_credential('n'); "
            "ident = credentials.Identity.of(cred); assert credentials.check_pass(ident.cluster_key, "
            "cred.pass_blob, cred.pass_sig); "
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_copies_are_the_key_itself_and_keys_are_not_pickled(backend):
    import copy
    import pickle

    key = ed25519.PrivateKey(os.urandom(32), backend)
    assert copy.copy(key) is key and copy.deepcopy(key) is key
    pub = key.public_key()
    assert copy.copy(pub) is pub
    sig = key.sign(b"m")
    del key  # a shallow copy sharing its EVP_PKEY would now sign with a freed key
    assert pub.verify_ok(sig, b"m")
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(ed25519.PrivateKey(os.urandom(32), backend))


def test_only_buffers_are_signed(backend):
    key = ed25519.PrivateKey(os.urandom(32), backend)
    assert key.sign(bytearray(b"abc")) == key.sign(b"abc") == key.sign(memoryview(b"abc"))
    if backend is not None:
        with pytest.raises(TypeError):
            key.sign(3)  # not three zero bytes


@pytest.mark.parametrize("size", [0, -1, 255 * 32 + 1])
def test_hkdf_refuses_sizes_rfc_5869_does_not_allow(size):
    with pytest.raises(ValueError, match="HKDF"):
        ed25519.hkdf_sha256(b"secret", b"info", size)


def test_a_backend_that_accepts_a_bad_signature_is_not_chosen(monkeypatch):
    if ed25519._openssl() is None:
        pytest.skip("this Python's libcrypto has no raw Ed25519 keys")
    assert ed25519._load() is not None
    monkeypatch.setattr(ed25519._OpenSSL, "verify_with", lambda self, pkey, sig, data: True)
    assert ed25519._load() is None
