"""The cluster's certificate authority and the TLS contexts built from it.

The head makes a CA at `manta start --head`; every node's certificate is issued
from a CSR it sends after the manta handshake, so the node's key never leaves
it. TLS carries the manta handshake unchanged: TLS says "a cluster member's
transport", the handshake says which principal speaks. Contexts are TLS 1.3
only and mutual (CERT_REQUIRED both ways), except the first contact of a
joining node, which has no certificate yet and verifies the head only.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Every certificate carries this name as a SAN: peers verify against the
# cluster CA, not a host name, because nodes are dialled by whatever address
# they advertised (often an IP) and the CA issues only to cluster members.
CLUSTER_NAME = "manta-cluster"


class TlsError(Exception):
    """A certificate or CA that cannot be used, with what to do about it."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the CA certificate's DER: what `--ca-hash` pins."""
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_ca(days: float = 3650.0, name: str = "manta cluster CA") -> tuple[bytes, bytes]:
    """A new self-signed CA: (cert PEM, key PEM)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def check_ca_pair(ca_pem: bytes, ca_key_pem: bytes) -> None:
    """Raises TlsError unless `ca_pem` is a CA certificate, valid now, and
    `ca_key_pem` its EC key: what the head needs to sign nodes' CSRs."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        key = serialization.load_pem_private_key(ca_key_pem, None)
    except (ValueError, TypeError) as e:
        raise TlsError(f"not a PEM certificate and an unencrypted PEM key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key must be an EC key (e.g. openssl ecparam -name prime256v1)")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != ca.public_key().public_bytes(*spki):
        raise TlsError("the CA key is not the key of that CA certificate")
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TlsError("the certificate is not a CA (it needs basicConstraints CA:TRUE)")
    if not ca.not_valid_before_utc <= _now() <= ca.not_valid_after_utc:
        raise TlsError(f"the CA is not valid now (valid {ca.not_valid_before_utc} to {ca.not_valid_after_utc})")


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or "manta node")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def issue(ca_cert_pem: bytes, ca_key_pem: bytes, csr_pem: bytes, days: float, hosts: tuple[str, ...] = ()) -> bytes:
    """Signs a CSR: a leaf certificate for both ends of a link (server and client auth).

    The subject comes from the CSR but the SANs and usages from here: a
    requester names itself, it does not choose what its certificate allows."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise TlsError(f"the certificate request is not a PEM CSR: {e}") from None
    if not csr.is_signature_valid:
        raise TlsError("the certificate request's signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise TlsError("the certificate request must carry an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key is not an EC key")
    sans: list[x509.GeneralName] = [x509.DNSName(CLUSTER_NAME), x509.DNSName("localhost")]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host:
                sans.append(x509.DNSName(host))
    now = _now()
    end = now + datetime.timedelta(days=days)
    # A few minutes back for clock skew, but never past the end (tests issue expired ones).
    start = min(now - datetime.timedelta(minutes=5), end - datetime.timedelta(seconds=1))
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert_pem(cert)


def validity(cert_pem_bytes: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    cert = x509.load_pem_x509_certificate(cert_pem_bytes)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def needs_renewal(cert_pem_bytes: bytes, now: datetime.datetime | None = None) -> bool:
    """True when less than a third of the certificate's validity is left."""
    start, end = validity(cert_pem_bytes)
    now = now or _now()
    return (end - now) < (end - start) / 3


def verify_chain(ca_pem: bytes, cert_pem_bytes: bytes) -> None:
    """Raises TlsError unless `cert` was signed by `ca` and is valid now."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem_bytes)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as e:  # InvalidSignature has no common base
        raise TlsError(f"the certificate was not issued by this cluster's CA ({type(e).__name__})") from None
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    now = _now()
    if now > end:
        raise TlsError(f"the certificate expired at {end.isoformat()}")
    if now < start:
        raise TlsError(f"the certificate is not valid before {start.isoformat()}")


@dataclass(frozen=True)
class TlsMaterial:
    """What a process needs for mutual TLS: the CA, and its own cert and key (PEM)."""

    ca: bytes
    cert: bytes = b""
    key: bytes = b""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ca)


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads a chain only from files: a private temp dir, removed at once.
    with tempfile.TemporaryDirectory(prefix="manta-tls-") as tmp:
        cpath, kpath = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cpath, cert), (kpath, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cpath, kpath)


def _base(purpose: ssl.Purpose, ca: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.decode())
    return ctx


def server_context(material: TlsMaterial, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A listener's context. `require_client_cert=False` only for the head's join
    listener path, where a node has no certificate yet (it proves itself with
    the manta handshake, and then gets one)."""
    if not material.cert:
        raise TlsError("a TLS listener needs a certificate and key")
    ctx = _base(ssl.Purpose.CLIENT_AUTH, material.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _load_chain(ctx, material.cert, material.key)
    return ctx


def client_context(material: TlsMaterial) -> ssl.SSLContext:
    """A dialler's context: verifies the server against the cluster CA (by the
    cluster SAN, whatever address was dialled) and presents our cert if we have one."""
    ctx = _base(ssl.Purpose.SERVER_AUTH, material.ca)
    ctx.check_hostname = True
    if material.cert:
        _load_chain(ctx, material.cert, material.key)
    return ctx


# -- the files a node keeps, and contexts that follow them ----------------------

CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.pem", "ca.key", "node.pem", "node.key"


def write_private(path: str, data: bytes) -> None:
    """Replaces `path` atomically with a 0600 file: a reader sees the old or the new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_material(tls_dir: str, material: TlsMaterial) -> None:
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    write_private(os.path.join(tls_dir, CA_FILE), material.ca)
    # The key first: a reader that sees the new cert finds its key already there
    # (load_material retries the pair if they do not match).
    write_private(os.path.join(tls_dir, KEY_FILE), material.key)
    write_private(os.path.join(tls_dir, CERT_FILE), material.cert)


def load_material(tls_dir: str) -> TlsMaterial:
    def read(name: str) -> bytes:
        with open(os.path.join(tls_dir, name), "rb") as f:
            return f.read()

    return TlsMaterial(ca=read(CA_FILE), cert=read(CERT_FILE), key=read(KEY_FILE))


def sealed_material(material: TlsMaterial) -> int:
    """A sealed memfd holding `material`, to hand to a process that may not read
    the node's files (the caller closes it; `material_of_fd` reads it)."""
    fd = os.memfd_create("manta-tls", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    data = json.dumps({"ca": material.ca.decode(), "cert": material.cert.decode(),
                       "key": material.key.decode()}).encode()
    os.write(fd, data)
    # Nothing may change it once handed out.
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                | fcntl.F_SEAL_SEAL)
    return fd


def material_of_fd(fd: int) -> TlsMaterial:
    fields = json.loads(os.pread(fd, os.fstat(fd).st_size, 0))
    return TlsMaterial(ca=fields["ca"].encode(), cert=fields["cert"].encode(), key=fields["key"].encode())


def has_material(tls_dir: str) -> bool:
    return bool(tls_dir) and os.path.exists(os.path.join(tls_dir, CERT_FILE))


class TlsContexts:
    """One process's server and client contexts, made from its node's files.

    `refresh()` (a stat, called before each new connection) reloads the
    certificate when a renewal replaced the files: existing connections keep
    going, new ones use the new certificate, and nothing restarts. Made from
    `material` handed over (no `tls_dir`), they keep it."""

    def __init__(self, tls_dir: str, material: TlsMaterial | None = None) -> None:
        self.tls_dir = tls_dir
        self.material = material if material is not None else load_material(tls_dir)
        self._mtime = self._stamp()
        self._server: dict[bool, ssl.SSLContext] = {}
        self._client: ssl.SSLContext | None = None

    def _stamp(self) -> float:
        if not self.tls_dir:
            return 0
        try:
            return os.stat(os.path.join(self.tls_dir, CERT_FILE)).st_mtime_ns
        except OSError:
            return 0

    def server(self, require_client_cert: bool = True) -> ssl.SSLContext:
        ctx = self._server.get(require_client_cert)
        if ctx is None:
            ctx = self._server[require_client_cert] = server_context(self.material, require_client_cert=require_client_cert)
        return ctx

    def client(self) -> ssl.SSLContext:
        if self._client is None:
            self._client = client_context(self.material)
        return self._client

    def refresh(self) -> bool:
        stamp = self._stamp()
        if stamp == self._mtime:
            return False
        try:
            material = load_material(self.tls_dir)
            for ctx in (*self._server.values(), *((self._client,) if self._client else ())):
                _load_chain(ctx, material.cert, material.key)
        except (OSError, ssl.SSLError, ValueError):
            return False  # caught between the key and the cert being replaced: next time
        self.material, self._mtime = material, stamp
        return True


def load_contexts(session_dir: str) -> TlsContexts | None:
    """The contexts of a node whose session has certificates, else None (TLS off)."""
    tls_dir = os.path.join(session_dir, "tls") if session_dir else ""
    return TlsContexts(tls_dir) if has_material(tls_dir) else None


def peer_certificate(transport: object) -> bytes:
    """The PEM certificate the other end of an asyncio SSL transport presented."""
    get = getattr(transport, "get_extra_info", None)
    obj = get("ssl_object") if get else None
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if not der:
        return b""
    return cert_pem(x509.load_der_x509_certificate(der))
