"""A real redis-server with a password and, if asked, TLS under a throwaway CA;
and what the Redis attack tests look for in a cluster's processes and files."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys

from chaos.chaos_support import LocalCluster, RedisServer, free_port, read_json_line
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["LocalCluster", "SecureRedis", "find_secret", "free_port", "kv_round", "make_ca", "start_refused"]


def make_ca(directory: str, name: str) -> tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA, written to DIRECTORY/NAME.pem; returns the path, key and cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = os.path.join(directory, f"{name}.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def _server_cert(directory: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class SecureRedis(RedisServer):
    """redis-server on a free loopback port, its password in a config file
    (never its argv), with TLS under a fresh CA if `tls`; stopped by PID."""

    def __init__(self, password: str, tls: bool = False) -> None:
        self.password = password
        self.tls = tls
        self.scheme = "rediss" if tls else "redis"

    def command(self, binary: str) -> list[str]:
        lines = ["bind 127.0.0.1", 'save ""', "appendonly no", f"dir {self.dir}", f"requirepass {self.password}"]
        if self.tls:
            self.ca, ca_key, ca_cert = make_ca(self.dir, "redis-ca")
            cert, key = _server_cert(self.dir, ca_key, ca_cert)
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                      f"tls-ca-cert-file {self.ca}", "tls-auth-clients no"]
        else:
            lines += [f"port {self.port}"]
        conf = os.path.join(self.dir, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [binary, conf]

    def client(self):  # a redis client of the attacker's: the password, no manta key
        import redis

        options = {"ssl_ca_certs": self.ca} if self.tls else {}
        return redis.Redis.from_url(self.url, password=self.password, **options)

    def password_file(self) -> str:
        """The password in a 0600 file beside the server's (outside any session)."""
        path = os.path.join(self.dir, "redis-password")
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password + "\n")
        return path


KV_ROUND = """
import json
from manta.experimental import internal_kv as kv
@manta.remote
def square(x):
    return x * x
assert manta.get(square.remote(7)) == 49
before = kv._internal_kv_get(b"k", namespace="sec")
kv._internal_kv_put(b"k", b"stored", namespace="sec")
print("KV", json.dumps({"before": before and before.decode()}), flush=True)
manta.shutdown()
"""


def kv_round(cluster: LocalCluster) -> str | None:
    """A driver that needs the head and its storage: runs a task, reads then
    writes a KV entry. Returns what it read ("stored" after an earlier round)."""
    proc = cluster.driver(KV_ROUND)
    out = read_json_line(proc, "KV", 90)
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    return out["before"]


def start_refused(cluster: LocalCluster, *args: str) -> str:
    """`manta start --head --port 0 ARGS`, which must fail having started nothing;
    returns what it said, on one line whatever the terminal wrapped."""
    out = subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0", *args],
                         env=cluster.env, capture_output=True, text=True, timeout=90)
    said = out.stdout + out.stderr
    assert out.returncode == 1, said
    assert os.listdir(cluster.root) == [], "started something anyway"
    return " ".join(said.split())


def find_secret(secret: str, cluster: LocalCluster, skip: tuple[str, ...] = ()) -> list[str]:
    """Where `secret` shows: the command line or environment of any of the
    cluster's processes, or any file under its session root (records, logs).
    Files whose path contains one of `skip` are not read."""
    needle = secret.encode()
    found = []
    for pid in sorted(cluster.all_pids()):
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    if needle in f.read():
                        found.append(f"/proc/{pid}/{what}")
            except OSError:
                pass
    for dirpath, _, files in os.walk(cluster.root):
        for name in files:
            path = os.path.join(dirpath, name)
            if any(s in path for s in skip):
                continue
            try:
                with open(path, "rb") as f:
                    if needle in f.read():
                        found.append(path)
            except OSError:
                pass
    return found
