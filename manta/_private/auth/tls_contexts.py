"""TLS for manta's connections: a process's certificate material and the
contexts made from it.

Only the standard library's ssl: every process that dials or listens needs
this, while only the head (issuing certificates) and a joining node (asking
for one) need `pki`, whose cryptography package costs each process about
11 MB of RSS and 50 ms of import (measured with ru_maxrss and -X importtime
on the 2-core VM; the idle local cluster has six such processes). Contexts
are TLS 1.3 only and mutual (CERT_REQUIRED both ways), except the first
contact of a joining node, which has no certificate yet and verifies the
head only.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import ssl
import tempfile
from dataclasses import dataclass

# Every certificate carries this name as a SAN: peers verify against the
# cluster CA, not a host name, because nodes are dialled by whatever address
# they advertised (often an IP) and the CA issues only to cluster members.
CLUSTER_NAME = "manta-cluster"


class TlsError(Exception):
    """A certificate or CA that cannot be used, with what to do about it."""


def fingerprint(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the CA certificate's DER (the first in `ca_pem`): what
    `--ca-hash` pins."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = ca_pem.find(begin)
    stop = ca_pem.find(end, start + 1)
    if start < 0 or stop < 0:
        raise ValueError("not a PEM certificate: no BEGIN/END CERTIFICATE lines")
    der = base64.b64decode(b"".join(ca_pem[start + len(begin):stop].split()), validate=True)
    return "sha256:" + hashlib.sha256(der).hexdigest()


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
    return ssl.DER_cert_to_PEM_cert(der).encode()
