"""Making a node's TLS files: the head's CA at `manta start --head`, and a
joining node's certificate, signed by the head from the node's CSR.

A node's files live in `<session>/tls/` (0700; files 0600): ca.pem, node.pem
and node.key, and on the head ca.key too. Every process of the node uses
them (auth.tls_contexts.load_contexts); their presence is what turns TLS on."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
from typing import Any

from manta._private.auth import pki, tls_contexts
from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.protocol import auth_messages as am
from manta._private.protocol.identity import Role
from manta._private.transport.connection import Connection, TlsRefused, connect


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def tls_wanted(mode: str, hosts: list[str]) -> bool:
    """`on`, `off`, or `auto`: on when any of `hosts` (listeners, the head) is not on loopback."""
    if mode not in ("on", "off", "auto"):
        raise ValueError(f"--tls must be on, off or auto, not {mode!r}")
    return mode == "on" or (mode == "auto" and any(not is_loopback(h) for h in hosts if h))


def tls_dir(session_dir: str) -> str:
    return os.path.join(session_dir, "tls")


def _read(*paths: str) -> list[bytes]:
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def bring_own(session_dir: str, ca: str, cert: str, key: str) -> str:
    """Copies certificates the admin made (--tls-ca/--tls-cert/--tls-key); returns the CA's fingerprint."""
    d = tls_dir(session_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    try:
        ca_pem, cert_pem, key_pem = _read(ca, cert, key)
        pki.verify_chain(ca_pem, cert_pem)
    except (OSError, ValueError, tls_contexts.TlsError) as e:
        shutil.rmtree(d, ignore_errors=True)
        raise ValueError(f"--tls-ca/--tls-cert/--tls-key: {e}") from None
    tls_contexts.save_material(d, tls_contexts.TlsMaterial(ca=ca_pem, cert=cert_pem, key=key_pem))
    return tls_contexts.fingerprint(ca_pem)


def make_head_ca(session_dir: str, days: float, hosts: tuple[str, ...],
                 given: tuple[bytes, bytes] | None = None) -> str:
    """The cluster CA and the head machine's node certificate; returns the CA's
    fingerprint. `given`: the admin's CA (cert, key PEM), e.g. from a
    Kubernetes Secret, so that the CA, and the `--ca-hash` nodes pin,
    outlive this session; else a new one."""
    d = tls_dir(session_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    ca, ca_key = given or pki.make_ca()
    tls_contexts.write_private(os.path.join(d, tls_contexts.CA_KEY_FILE), ca_key)
    key = pki.new_key()
    cert = pki.issue(ca, ca_key, pki.make_csr(key, "head"), days, hosts)
    tls_contexts.save_material(d, tls_contexts.TlsMaterial(ca=ca, cert=cert, key=pki.key_pem(key)))
    return tls_contexts.fingerprint(ca)


def read_ca(ca_path: str, key_path: str) -> tuple[bytes, bytes]:
    """The admin's CA for the head to sign with (--tls-ca with --tls-ca-key), checked:
    a CA certificate and its own EC key."""
    try:
        ca, key = _read(ca_path, key_path)
        pki.check_ca_pair(ca, key)
    except (OSError, ValueError, tls_contexts.TlsError) as e:
        raise ValueError(f"--tls-ca/--tls-ca-key: {e}") from None
    return ca, key


def _first_contact() -> ssl.SSLContext:
    # No CA yet: encrypt, take the head's certificate, and check it against
    # the CA it sends (pinned by --ca-hash) once the handshake is done.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def join_head(head_address: str, token: bytes, session_dir: str, ca_hash: str = "",
                    hosts: tuple[str, ...] = (), timeout: float = 30.0) -> str:
    """A joining node's certificate: key and CSR made here, signed by the head
    after the manta handshake proved both ends hold the cluster token. Returns
    the CA's fingerprint; raises TlsRefused on a CA that is not the pinned one."""
    identity = Identity.of(ClusterKeys(token).node_credential("joining node"))

    def ignore(conn: Connection, msg: Any) -> None:
        pass

    conn = await connect(head_address, identity, ignore, name="head", timeout=timeout, expect=Role.CLUSTER,
                         tls=_first_contact())
    try:
        key = pki.new_key()
        reply = await conn.request(am.IssueCert(csr=pki.make_csr(key, "node"), hosts=hosts))
        peer = tls_contexts.peer_certificate(conn.transport)
    finally:
        conn.close()
    fp = tls_contexts.fingerprint(reply.ca)
    if ca_hash and fp != ca_hash.lower():
        raise TlsRefused(f"the head at {head_address} has the CA {fp}, not the {ca_hash} given by --ca-hash: "
                         "a wrong address, or someone between this node and the head")
    try:
        pki.verify_chain(reply.ca, peer)
        pki.verify_chain(reply.ca, reply.cert)
    except tls_contexts.TlsError as e:
        raise TlsRefused(f"the head at {head_address}: {e}") from None
    tls_contexts.save_material(tls_dir(session_dir), tls_contexts.TlsMaterial(ca=reply.ca, cert=reply.cert, key=pki.key_pem(key)))
    return fp
