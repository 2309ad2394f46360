"""Two nodes with their own IP addresses, each in its own network namespace.

Nothing here can lean on 127.0.0.1: the head listens on one namespace's
address, the second node joins over the bridge, and a driver on the
non-head node runs work on both. Needs root and iproute2 (CI has both);
skipped with the reason otherwise.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from tests_support import netns_unavailable, sh

SUFFIX = f"{os.getpid() % 100000}"
NS_A, NS_B = f"mta{SUFFIX}", f"mtb{SUFFIX}"
BRIDGE = f"mtbr{SUFFIX}"
# Test hosts inside namespaces this test creates (and removes).
IP_A, IP_B = "10.213.77.2", "10.213.77.3"


REASON = netns_unavailable(f"mtprobe{SUFFIX}")
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def net():
    created = []
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        created.append(("link", BRIDGE))
        sh("ip", "link", "set", BRIDGE, "up")
        for ns, ip, tag in ((NS_A, IP_A, "a"), (NS_B, IP_B, "b")):
            sh("ip", "netns", "add", ns)
            created.append(("netns", ns))
            host_end, ns_end = f"mt{tag}h{SUFFIX}", f"mt{tag}n{SUFFIX}"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            created.append(("link", host_end))
            sh("ip", "link", "set", ns_end, "netns", ns)
            sh("ip", "link", "set", host_end, "master", BRIDGE)
            sh("ip", "link", "set", host_end, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ns_end)
            sh("ip", "-n", ns, "link", "set", ns_end, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for kind, name in reversed(created):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)


def in_ns(ns, root, *args, timeout=120):
    env = {**os.environ, "MANTA_TMPDIR": root}
    env.pop("MANTA_TOKEN", None)
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cluster_across_namespaces(net):
    # One session root per namespace, as if they were two machines.
    root_a, root_b = tempfile.mkdtemp(prefix="nsa"), tempfile.mkdtemp(prefix="nsb")
    try:
        out = in_ns(NS_A, root_a, "-m", "manta.cli", "start", "--head", "--host", IP_A, "--port", "0",
                    "--num-cpus", "1", "--resources", '{"on_a": 2}')
        assert out.returncode == 0, out.stderr
        address = out.stdout.split("started at ")[1].split()[0]
        assert address.startswith(IP_A + ":")
        token_file = out.stdout.split("token file: ")[1].split()[0]
        # Off loopback TLS is on by default: the head made a cluster CA and
        # printed its fingerprint, which the joining node pins.
        assert "TLS on: cluster CA sha256:" in out.stderr, out.stderr
        ca_hash = out.stderr.split("cluster CA ")[1].split()[0]
        copy = os.path.join(root_b, "token-copy")
        shutil.copy(token_file, copy)
        out = in_ns(NS_B, root_b, "-m", "manta.cli", "start", "--address", address, "--host", IP_B,
                    "--token-file", copy, "--ca-hash", ca_hash, "--num-cpus", "2", "--resources", '{"on_b": 2}')
        assert out.returncode == 0, out.stderr
        # The node's certificate was issued at join, by the head's CA.
        certs = [os.path.join(d, f) for d, _, files in os.walk(root_b) for f in files if f.endswith(".pem")]
        assert certs, f"no certificate under {root_b}"

        driver = textwrap.dedent(
            f"""
            import hashlib, manta
            import numpy as np
            manta.init(address="{address}")
            addrs = sorted(n["NodeManagerAddress"] for n in manta.nodes() if n["Alive"])
            assert addrs == sorted(["{IP_A}", "{IP_B}"]), addrs

            @manta.remote
            def where():
                return manta.get_runtime_context().get_node_id()

            a = manta.get(where.options(resources={{"on_a": 1}}).remote())
            b = manta.get(where.options(resources={{"on_b": 1}}).remote())
            assert a != b

            @manta.remote(resources={{"on_a": 1}})
            def make():
                return np.random.default_rng(3).integers(0, 255, size=50 << 20, dtype=np.uint8)

            @manta.remote(resources={{"on_b": 1}})
            def digest(x):
                return hashlib.sha256(x).hexdigest()

            ref = make.remote()
            assert manta.get(digest.remote(ref)) == hashlib.sha256(manta.get(ref)).hexdigest()

            @manta.remote(resources={{"on_a": 1}})
            class Counter:
                def __init__(self):
                    self.n = 0
                def add(self):
                    self.n += 1
                    return self.n

            c = Counter.remote()
            assert manta.get([c.add.remote() for _ in range(20)])[-1] == 20
            manta.shutdown()
            print("DRIVER OK")
            """
        )
        # The driver runs on the non-head node.
        out = in_ns(NS_B, root_b, "-c", driver, timeout=150)
        assert "DRIVER OK" in out.stdout, out.stdout + out.stderr
    finally:
        in_ns(NS_B, root_b, "-m", "manta.cli", "stop")
        in_ns(NS_A, root_a, "-m", "manta.cli", "stop")
        shutil.rmtree(root_a, ignore_errors=True)
        shutil.rmtree(root_b, ignore_errors=True)
