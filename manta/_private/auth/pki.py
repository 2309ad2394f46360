"""The cluster's certificate authority: keys, CSRs and certificates.

The head makes a CA at `manta start --head`; every node's certificate is issued
from a CSR it sends after the manta handshake, so the node's key never leaves
it. TLS carries the manta handshake unchanged: TLS says "a cluster member's
transport", the handshake says which principal speaks.
The contexts made from what it issues are in `tls_contexts`, which needs no
cryptography package.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from manta._private.auth.tls_contexts import CLUSTER_NAME, TlsError


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


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


