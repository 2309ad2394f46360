"""TLS on a real 2-node cluster on this machine (`--tls on` over 127.0.0.1):
tasks and an object cross nodes; a plaintext peer, a wrong CA, an expired
certificate are refused with clear messages; certificates renew without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from manta._private.auth import pki, tls_contexts
from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.services import read_token
from manta._private.transport.connection import TlsRefused, connect
from tests.security.dos_support import cli

DRIVER = textwrap.dedent("""
    import sys, manta, numpy as np
    manta.init(address=sys.argv[1])
    @manta.remote(resources={"B": 1})
    def make(): return np.ones(5_000_000, dtype=np.uint8)
    @manta.remote
    def total(a): return int(a.sum())
    @manta.remote(resources={"B": 1})
    def square(x): return x * x
    print(sum(manta.get([square.remote(i) for i in range(20)])), manta.get(total.remote(make.remote())),
          int(manta.get(make.remote()).sum()))
    manta.shutdown()
""")


class TwoNodes:
    def __init__(self, system_config: dict[str, Any] | None = None) -> None:
        self.roots = [tempfile.mkdtemp(prefix="mtls"), tempfile.mkdtemp(prefix="mtls")]
        self.envs = [{**os.environ, "MANTA_TMPDIR": r, "PYTHONPATH": os.pathsep.join(sys.path)} for r in self.roots]
        for env in self.envs:
            env.pop("MANTA_TOKEN", None)
            env.pop("MANTA_ADDRESS", None)
        extra = ["--system-config", json.dumps(system_config)] if system_config else []
        self.address = ""
        try:
            out = cli(self.envs[0], "start", "--head", "--port", "0", "--num-cpus", "1", "--tls", "on", *extra)
            self.fingerprint = next(w for w in (out.stdout + out.stderr).split() if w.startswith("sha256:"))
            (self.session,) = [os.path.join(self.roots[0], d) for d in os.listdir(self.roots[0])]
            with open(os.path.join(self.session, "cluster.json")) as f:
                self.address = json.load(f)["head_address"].partition(":")[2]
            self.token_file = os.path.join(self.session, "token")
        except BaseException:
            self.stop()
            raise

    def join(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli(self.envs[1], "start", "--address", self.address, "--token-file", self.token_file,
                   "--num-cpus", "1", "--resources", '{"B": 1}', "--tls", "on", *args, check=check)

    def node_session(self) -> str:
        (s,) = [os.path.join(self.roots[1], d) for d in os.listdir(self.roots[1])]
        return s

    def stop(self) -> None:
        if self.address:
            for env in reversed(self.envs):
                cli(env, "stop", "--address", self.address, check=False)
        for r in self.roots:
            shutil.rmtree(r, ignore_errors=True)


@pytest.fixture
def nodes() -> Iterator[TwoNodes]:
    c = TwoNodes()
    try:
        yield c
    finally:
        c.stop()


def _identity(c: TwoNodes) -> Identity:
    return Identity.of(ClusterKeys(read_token(c.token_file)).node_credential("test"))


def test_tasks_and_objects_cross_nodes_over_tls(nodes: TwoNodes) -> None:
    nodes.join("--ca-hash", nodes.fingerprint)
    tls = os.path.join(nodes.node_session(), "tls")
    assert sorted(os.listdir(tls)) == ["ca.pem", "node.key", "node.pem"]  # no CA key off the head
    assert os.stat(os.path.join(tls, "node.key")).st_mode & 0o077 == 0
    r = subprocess.run([sys.executable, "-c", DRIVER, nodes.address], env=nodes.envs[0], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(sum(i * i for i in range(20))), "5000000", "5000000"]


def test_plaintext_peers_refused(nodes: TwoNodes) -> None:
    # A manta client without certificates: a clear error, not a hang.
    async def plain() -> None:
        await connect(f"tcp:{nodes.address}", _identity(nodes), lambda c, m: None, timeout=3)

    with pytest.raises(TlsRefused, match="it may want TLS"):
        asyncio.run(plain())
    # Raw plaintext bytes: the listener closes the connection.
    host, _, port = nodes.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(b"\x10\x00\x00\x00" + b"x" * 16)
        data = s.recv(4096)
        assert data == b"" or data[:1] == b"\x15"  # closed, or a TLS alert record
    # The cluster keeps serving.
    nodes.join()


def test_wrong_ca_hash_refused(nodes: TwoNodes) -> None:
    r = nodes.join("--ca-hash", "sha256:" + "0" * 64, check=False)
    assert r.returncode != 0
    text = " ".join((r.stdout + r.stderr).split())
    assert "not the sha256:000" in text and "given by --ca-hash" in text


def test_expired_and_foreign_certificates_refused(nodes: TwoNodes) -> None:
    nodes.join()
    # The joined agent's TCP listener requires a client certificate of the cluster's CA.
    with open(os.path.join(nodes.session, "tls", tls_contexts.CA_FILE), "rb") as f:
        ca = f.read()
    with open(os.path.join(nodes.session, "tls", tls_contexts.CA_KEY_FILE), "rb") as f:
        ca_key = f.read()
    tmp = tempfile.mkdtemp(prefix="mtlsc")
    try:
        for name, (c_ca, c_key, days) in (("expired", (ca, ca_key, -1.0)), ("foreign", (*pki.make_ca(), 30.0))):
            key = pki.new_key()
            cert = pki.issue(c_ca, c_key, pki.make_csr(key, name), days)
            d = os.path.join(tmp, name, "tls")
            tls_contexts.save_material(d, tls_contexts.TlsMaterial(ca=ca, cert=cert, key=pki.key_pem(key)))
            ident = _identity(nodes)
            ident.tls = tls_contexts.load_contexts(os.path.dirname(d))

            async def dial() -> None:
                conn = await connect(f"tcp:{nodes.address}", ident, lambda c, m: None, timeout=10)
                conn.close()

            # The head verifies a certificate when one is presented.
            with pytest.raises((TlsRefused, ConnectionError, OSError)) as info:
                asyncio.run(dial())
            assert "refused this process's certificate" in str(info.value) or "TLS" in str(info.value)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_certificates_renew_without_restart() -> None:
    # 0.0005 days = 43 s: renewed when under 14 s are left, checked every 1.4 s.
    c = TwoNodes({"tls_cert_days": 0.0005})
    try:
        c.join()
        path = os.path.join(c.node_session(), "tls", "node.pem")
        with open(path, "rb") as f:
            first = f.read()
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(path, "rb") as f:
                now = f.read()
            if now != first:
                break
            time.sleep(0.5)
        assert now != first, "the node's certificate was not renewed"
        pki.verify_chain(open(os.path.join(c.session, "tls", "ca.pem"), "rb").read(), now)
        # Past the first certificate's expiry the cluster still runs tasks across nodes.
        _, end = pki.validity(first)
        time.sleep(max(0.0, end.timestamp() - time.time() + 1))
        r = subprocess.run([sys.executable, "-c", DRIVER, c.address], env=c.envs[0], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        c.stop()
