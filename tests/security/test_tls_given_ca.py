"""A head that signs with the admin's CA (`--tls-ca` with `--tls-ca-key`), as
the Kubernetes manifests run it: the CA and the fingerprint the workers pin
come from deploy/kubernetes/make-secrets.sh (openssl), so they are known
before the head starts and stay the same across heads. A real 2-node
cluster on this machine; `--memory` sets each node's `memory` resource."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator

import pytest

from manta._private.auth import pki, tls_contexts
from tests.security.dos_support import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_SECRETS = os.path.join(ROOT, "deploy", "kubernetes", "make-secrets.sh")

DRIVER = textwrap.dedent("""
    import sys, manta
    manta.init(address=sys.argv[1])
    @manta.remote(resources={"B": 1})
    def square(x): return x * x
    print(sum(manta.get([square.remote(i) for i in range(10)])), int(manta.cluster_resources()["memory"]))
    manta.shutdown()
""")

HEAD_MEMORY, NODE_MEMORY = 300_000_000, 200_000_000

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")


class GivenCa:
    """make-secrets.sh's files, and a head and a node each in a session root of its own."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="mgca")
        self.secrets = os.path.join(self.tmp, "secrets")
        self.roots = [os.path.join(self.tmp, "head"), os.path.join(self.tmp, "node")]
        self.envs = [{**os.environ, "MANTA_TMPDIR": r, "PYTHONPATH": os.pathsep.join(sys.path)} for r in self.roots]
        for env in self.envs:
            env.pop("MANTA_TOKEN", None)
            env.pop("MANTA_ADDRESS", None)
        self.address = ""
        subprocess.run(["sh", MAKE_SECRETS, self.secrets], check=True, capture_output=True, timeout=60)

    def file(self, name: str) -> str:
        return os.path.join(self.secrets, name)

    def start_head(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = cli(self.envs[0], "start", "--head", "--port", "0", "--num-cpus", "1", "--tls", "on",
                "--token-file", self.file("token"), "--tls-ca", self.file("ca.pem"), *extra, check=check)
        if r.returncode == 0:
            (session,) = [os.path.join(self.roots[0], d) for d in os.listdir(self.roots[0])]
            self.session = session
            with open(os.path.join(session, "cluster.json")) as f:
                self.address = json.load(f)["head_address"].partition(":")[2]
        return r

    def join(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli(self.envs[1], "start", "--address", self.address, "--token-file", self.file("token"),
                   "--num-cpus", "1", "--resources", '{"B": 1}', "--tls", "on", *extra, check=check)

    def stop(self) -> None:
        if self.address:
            for env in reversed(self.envs):
                cli(env, "stop", "--address", self.address, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def given() -> Iterator[GivenCa]:
    c = GivenCa()
    try:
        yield c
    finally:
        c.stop()


def test_head_signs_with_the_given_ca_and_nodes_pin_it_ahead(given: GivenCa) -> None:
    with open(given.file("ca-hash")) as f:
        ca_hash = f.read().strip()
    with open(given.file("ca.pem"), "rb") as f:
        ca = f.read()
    assert tls_contexts.fingerprint(ca) == ca_hash  # the script's openssl fingerprint is manta's
    out = given.start_head("--tls-ca-key", given.file("ca.key"), "--memory", str(HEAD_MEMORY))
    assert ca_hash in out.stdout + out.stderr
    tls = os.path.join(given.session, "tls")
    with open(os.path.join(tls, tls_contexts.CA_FILE), "rb") as f:
        assert f.read() == ca
    with open(os.path.join(tls, tls_contexts.CERT_FILE), "rb") as f:
        pki.verify_chain(ca, f.read())
    given.join("--ca-hash", ca_hash, "--memory", str(NODE_MEMORY))
    (node_session,) = [os.path.join(given.roots[1], d) for d in os.listdir(given.roots[1])]
    node_tls = os.path.join(node_session, "tls")
    assert sorted(os.listdir(node_tls)) == ["ca.pem", "node.key", "node.pem"]  # the CA key stays on the head
    with open(os.path.join(node_tls, tls_contexts.CERT_FILE), "rb") as f:
        pki.verify_chain(ca, f.read())
    r = subprocess.run([sys.executable, "-c", DRIVER, given.address], env=given.envs[0], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(sum(i * i for i in range(10))), str(HEAD_MEMORY + NODE_MEMORY)]


def test_a_key_of_another_ca_is_refused(given: GivenCa) -> None:
    other = os.path.join(given.tmp, "other.key")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", other], check=True)
    r = given.start_head("--tls-ca-key", other, check=False)
    assert r.returncode != 0
    assert "not the key of that CA certificate" in " ".join((r.stdout + r.stderr).split())
    assert not os.listdir(given.roots[0]) or not any(
        os.path.exists(os.path.join(given.roots[0], d, "cluster.json")) for d in os.listdir(given.roots[0]))


@pytest.mark.parametrize("args, says", [
    (["--tls-ca-key", "k"], "goes with --tls-ca"),
    (["--tls-ca", "c", "--tls-ca-key", "k", "--tls-cert", "x", "--tls-key", "y"], "without --tls-cert"),
])
def test_tls_ca_key_flag_misuse(args: list[str], says: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = cli(env, "start", "--head", "--port", "0", *args, check=False)
    assert r.returncode == 2 and says in " ".join((r.stdout + r.stderr).split())
    r = cli(env, "start", "--address", "127.0.0.1:1", "--tls-ca", "c", "--tls-ca-key", "k", check=False)
    assert r.returncode == 2 and "is for the head" in " ".join((r.stdout + r.stderr).split())
