"""The cluster CA and TLS contexts, in one process: issue, verify, refuse."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest

from manta._private.auth import pki, tls_contexts


def _node(ca: tuple[bytes, bytes], days: float = 30.0) -> tls_contexts.TlsMaterial:
    key = pki.new_key()
    cert = pki.issue(ca[0], ca[1], pki.make_csr(key, "node-a"), days, hosts=("127.0.0.1",))
    return tls_contexts.TlsMaterial(ca=ca[0], cert=cert, key=pki.key_pem(key))


def test_issue_and_verify() -> None:
    ca = pki.make_ca()
    node = _node(ca)
    pki.verify_chain(ca[0], node.cert)
    assert tls_contexts.fingerprint(ca[0]).startswith("sha256:") and len(tls_contexts.fingerprint(ca[0])) == 7 + 64
    start, end = pki.validity(node.cert)
    assert datetime.timedelta(days=29.9) < end - start < datetime.timedelta(days=30.1)
    assert not pki.needs_renewal(node.cert)


def test_wrong_ca_and_expired_refused() -> None:
    ca, other = pki.make_ca(), pki.make_ca()
    with pytest.raises(tls_contexts.TlsError, match="not issued by this cluster's CA"):
        pki.verify_chain(other[0], _node(ca).cert)
    with pytest.raises(tls_contexts.TlsError, match="expired"):
        pki.verify_chain(ca[0], _node(ca, days=-1).cert)
    with pytest.raises(tls_contexts.TlsError, match="not a PEM CSR"):
        pki.issue(ca[0], ca[1], b"junk", 1.0)


def test_contexts_are_tls13_and_mutual() -> None:
    ca = pki.make_ca()
    node = _node(ca)
    server, client = tls_contexts.server_context(node), tls_contexts.client_context(node)
    for ctx in (server, client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED


async def _talk(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(4))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=tls_contexts.CLUSTER_NAME,
        )
        writer.write(b"ping")
        data = await asyncio.wait_for(reader.readexactly(4), 5)
        writer.close()
        return data
    finally:
        srv.close()
        await srv.wait_closed()


def test_handshakes_over_sockets() -> None:
    ca = pki.make_ca()
    a, b = _node(ca), _node(ca)
    assert asyncio.run(_talk(tls_contexts.server_context(a), tls_contexts.client_context(b))) == b"ping"
    # A client without a certificate is refused by a mutual listener.
    bare = tls_contexts.client_context(tls_contexts.TlsMaterial(ca=ca[0]))
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(_talk(tls_contexts.server_context(a), bare))
    # A server whose certificate is from another CA is refused by the client.
    stranger = _node(pki.make_ca())
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_talk(tls_contexts.server_context(stranger), tls_contexts.client_context(b)))
    # An expired server certificate is refused.
    expired = _node(ca, days=-1)
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        asyncio.run(_talk(tls_contexts.server_context(expired), tls_contexts.client_context(b)))


def test_the_fingerprint_is_the_first_certificates_der_hash_without_cryptography() -> None:
    import hashlib
    import subprocess
    import sys

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca, other = pki.make_ca(), pki.make_ca()
    der = x509.load_pem_x509_certificate(ca[0]).public_bytes(serialization.Encoding.DER)
    want = "sha256:" + hashlib.sha256(der).hexdigest()
    assert tls_contexts.fingerprint(ca[0]) == want
    assert tls_contexts.fingerprint(b"\n" + ca[0] + other[0]) == want  # a bundle: its first certificate
    with pytest.raises(ValueError, match="not a PEM certificate"):
        tls_contexts.fingerprint(b"garbage")
    # What every process imports for TLS leaves the cryptography package out.
    code = "import sys, manta._private.auth.tls_contexts; print('cryptography' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
