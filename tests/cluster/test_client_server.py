"""The client API server: a driver on a machine that is not a node (docs/client.md).

The head runs in one network namespace; each client in another, with its
own empty session root, no node agent and no store: only the head's
address, a token and the CA's fingerprint. Real processes throughout: the
head, its agent, the proxy driver it starts per client, the workers.
Needs root and iproute2 (CI has both); skipped with the reason otherwise.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from tests_support import netns_unavailable, sh

SUFFIX = f"{os.getpid() % 100000}"
NS_H, NS_C = f"mch{SUFFIX}", f"mcc{SUFFIX}"
BRIDGE = f"mcbr{SUFFIX}"
# Test hosts inside namespaces this test creates (and removes).
IP_H, IP_C = "10.213.78.2", "10.213.78.3"
GRACE_S = 2.0


REASON = netns_unavailable(f"mcprobe{SUFFIX}")
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(240)]


class Cluster:
    def __init__(self, root_h, root_c, address, token, ca_hash):
        self.root_h, self.root_c = root_h, root_c
        self.address, self.token, self.ca_hash = address, token, ca_hash

    def env(self, root, **extra):
        env = {k: v for k, v in os.environ.items() if k not in ("MANTA_TOKEN", "MANTA_ADDRESS", "RAY_ADDRESS")}
        env.update(MANTA_TMPDIR=root, **extra)
        return env

    def on_head(self, *args, timeout=120):
        env = self.env(self.root_h, MANTA_TOKEN=self.token)
        return subprocess.run(["ip", "netns", "exec", NS_H, sys.executable, *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    def client_env(self, token=None):
        return self.env(self.root_c, MANTA_TOKEN=token or self.token, MANTA_CA_HASH=self.ca_hash)

    def client(self, code, token=None, timeout=150):
        """Runs a driver in the client's namespace; returns its completed process."""
        return subprocess.run(["ip", "netns", "exec", NS_C, sys.executable, "-c", textwrap.dedent(code)],
                              env=self.client_env(token), capture_output=True, text=True, timeout=timeout)

    def client_bg(self, code, token=None):
        return subprocess.Popen(["ip", "netns", "exec", NS_C, sys.executable, "-u", "-c", textwrap.dedent(code)],
                                env=self.client_env(token), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def token_of(self, role):
        out = self.on_head("-m", "manta.cli", "token", "create", "--role", role, "--address", self.address)
        assert out.returncode == 0, out.stderr
        return next(w for w in out.stdout.split() if w.startswith("mt1."))


@pytest.fixture(scope="module")
def cluster():
    created = []
    root_h, root_c = tempfile.mkdtemp(prefix="mch"), tempfile.mkdtemp(prefix="mcc")
    started = False
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        created.append(("link", BRIDGE))
        sh("ip", "link", "set", BRIDGE, "up")
        for ns, ip, tag in ((NS_H, IP_H, "h"), (NS_C, IP_C, "c")):
            sh("ip", "netns", "add", ns)
            created.append(("netns", ns))
            host_end, ns_end = f"mc{tag}h{SUFFIX}", f"mc{tag}n{SUFFIX}"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            created.append(("link", host_end))
            sh("ip", "link", "set", ns_end, "netns", ns)
            sh("ip", "link", "set", host_end, "master", BRIDGE)
            sh("ip", "link", "set", host_end, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ns_end)
            sh("ip", "-n", ns, "link", "set", ns_end, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        env = {k: v for k, v in os.environ.items() if k != "MANTA_TOKEN"}
        env["MANTA_TMPDIR"] = root_h
        out = subprocess.run(
            ["ip", "netns", "exec", NS_H, sys.executable, "-m", "manta.cli", "start", "--head", "--host", IP_H,
             "--port", "0", "--num-cpus", "2", "--client-reconnect-s", str(GRACE_S)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        started = True
        address = out.stdout.split("started at ")[1].split()[0]
        token_file = out.stdout.split("token file: ")[1].split()[0]
        with open(token_file) as f:
            token = f.read().strip()
        # Off loopback TLS is on: the client pins the CA the head printed.
        ca_hash = out.stderr.split("cluster CA ")[1].split()[0]
        yield Cluster(root_h, root_c, address, token, ca_hash)
    finally:
        if started:
            env = {k: v for k, v in os.environ.items() if k != "MANTA_TOKEN"}
            env["MANTA_TMPDIR"] = root_h
            subprocess.run(["ip", "netns", "exec", NS_H, sys.executable, "-m", "manta.cli", "stop", "--address",
                            address], env=env, capture_output=True, timeout=60)
        for kind, name in reversed(created):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        shutil.rmtree(root_h, ignore_errors=True)
        shutil.rmtree(root_c, ignore_errors=True)


def test_workload_through_the_client_server(cluster):
    out = cluster.client(f"""
        import hashlib, os, manta
        import numpy as np
        from manta.util.state import list_actors, list_jobs
        manta.init("manta://{cluster.address}")
        # Nothing of a node here: no session of a node in this machine's root.
        assert not os.listdir(os.environ["MANTA_TMPDIR"]), os.listdir(os.environ["MANTA_TMPDIR"])

        @manta.remote
        def square(x):
            return x * x

        assert manta.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]

        @manta.remote
        class Counter:
            def __init__(self, start):
                self.n = start
            def add(self, k):
                self.n += k
                return self.n

        c = Counter.options(name="counter").remote(10)
        assert manta.get([c.add.remote(1) for _ in range(5)])[-1] == 15
        assert manta.get(manta.get_actor("counter").add.remote(5)) == 20

        # 200 MB each way: put here, read by a task there; made there, read here.
        big = np.random.default_rng(7).integers(0, 255, size=200 << 20, dtype=np.uint8)
        ref = manta.put(big)

        @manta.remote
        def digest(x):
            return hashlib.sha256(x).hexdigest()

        assert manta.get(digest.remote(ref)) == hashlib.sha256(big).hexdigest()
        back = manta.get(ref)
        assert back.shape == big.shape and np.array_equal(back, big)
        del back, big

        @manta.remote
        def make(n):
            return np.arange(n, dtype=np.uint8)

        made = make.remote(200 << 20)
        got = manta.get(made)
        assert got.nbytes == 200 << 20 and hashlib.sha256(got).hexdigest() == manta.get(digest.remote(made))
        del got

        ready, rest = manta.wait([square.remote(3), square.remote(4)], num_returns=2, timeout=60)
        assert len(ready) == 2 and not rest
        # A ref inside a value: borrowed for the client, usable after.
        inner = manta.put("inside")
        outer = manta.put([inner])
        del inner
        assert manta.get(manta.get(outer)[0]) == "inside"
        # A value of many chunks that holds a ref, and an array that is not one flat buffer.
        grid = np.arange(6 << 20, dtype=np.float32).reshape(2048, -1)[:, ::2]
        mixed = manta.get(manta.put(dict(ref=manta.put("held"), grid=grid, tail=b"t" * 9_000_000)))
        assert manta.get(mixed["ref"]) == "held" and np.array_equal(mixed["grid"], grid)
        assert mixed["tail"] == b"t" * 9_000_000
        assert manta.cluster_resources()["CPU"] == 2.0
        job = manta.get_runtime_context().get_job_id()
        assert any(j["job_id"] == job and j["status"] == "RUNNING" for j in list_jobs())
        assert any(a["name"] == "counter" and a["state"] == "ALIVE" for a in list_actors())
        manta.shutdown()
        print("CLIENT OK")
    """)
    assert "CLIENT OK" in out.stdout, out.stdout + out.stderr


def test_generators_placement_groups_and_stories_through_the_client_server(cluster):
    out = cluster.client(f"""
        import asyncio, manta
        from manta.util import placement_group, remove_placement_group
        from manta.util.state import task_story
        manta.init("manta://{cluster.address}")

        @manta.remote
        def count(n):
            for i in range(n):
                yield i * 10

        gen = count.remote(5)
        assert [manta.get(r) for r in gen] == [0, 10, 20, 30, 40]
        assert gen.is_finished()

        @manta.remote(num_returns="dynamic")
        def dyn(n):
            for i in range(n):
                yield i

        assert [manta.get(r) for r in manta.get(dyn.remote(4))] == [0, 1, 2, 3]

        @manta.remote
        def fails_at_two():
            yield 1
            yield 2
            raise ValueError("third item")

        got = []
        try:
            for r in fails_at_two.remote():
                got.append(manta.get(r))
        except ValueError as e:
            assert "third item" in str(e)
        assert got == [1, 2], got

        @manta.remote
        class Source:
            def items(self, n):
                for i in range(n):
                    yield "x" * i

        src = Source.remote()
        assert [manta.get(r) for r in src.items.remote(3)] == ["", "x", "xx"]

        async def drain():
            return [await r async for r in count.remote(3)]
        assert asyncio.run(drain()) == [0, 10, 20]

        # A generator dropped half-way lets its other items go, and the session goes on.
        half = count.remote(50)
        assert manta.get(next(half)) == 0
        del half

        pg = placement_group([{{"CPU": 1}}])
        assert manta.get(pg.ready(), timeout=60).id == pg.id
        remove_placement_group(pg)
        never = placement_group([{{"CPU": 64}}])
        ready, _ = manta.wait([never.ready()], timeout=0.5)
        assert not ready
        remove_placement_group(never)

        # retry_exceptions as classes: matched by name (the proxy unpickles nothing of the client's).
        class Flaky(Exception):
            pass

        @manta.remote
        class Tries:
            def __init__(self):
                self.n = 0
            def bump(self):
                self.n += 1
                return self.n

        tries = Tries.remote()

        @manta.remote(max_retries=3, retry_exceptions=[Flaky])
        def flaky(t):
            if manta.get(t.bump.remote()) < 3:
                raise Flaky("not yet")
            return "third time"

        assert manta.get(flaky.remote(tries)) == "third time"

        @manta.remote(max_retries=3, retry_exceptions=[Flaky])
        def other(t):
            manta.get(t.bump.remote())
            raise KeyError("not retried")

        try:
            manta.get(other.remote(tries))
        except KeyError:
            pass
        assert manta.get(tries.bump.remote()) == 5  # three tries, one run of other, this call

        ref = manta.remote(lambda: 7).remote()
        assert manta.get(ref) == 7
        steps = [r.step for r in task_story(ref)]
        assert steps and "submitted" in steps[0], steps
        manta.shutdown()
        print("CLIENT OK")
    """)
    assert "CLIENT OK" in out.stdout, out.stdout + out.stderr


def _job_state(cluster, job_hex):
    """The job's status and its actors' states, asked by a driver on the head's node."""
    out = cluster.on_head("-c", textwrap.dedent(f"""
        import manta
        from manta.util.state import list_actors, list_jobs
        manta.init(address="auto")
        jobs = [j["status"] for j in list_jobs() if j["job_id"] == "{job_hex}"]
        actors = [a["state"] for a in list_actors() if a["job_id"] == "{job_hex}"]
        print("STATE", jobs, actors)
    """))
    assert "STATE" in out.stdout, out.stdout + out.stderr
    return out.stdout.split("STATE ", 1)[1].strip()


def test_killed_client_has_its_job_cleaned_up(cluster):
    proc = cluster.client_bg(f"""
        import time, manta
        manta.init("manta://{cluster.address}")

        @manta.remote
        class Held:
            def ping(self):
                return "pong"

        h = Held.remote()
        assert manta.get(h.ping.remote()) == "pong"
        print("JOB", manta.get_runtime_context().get_job_id(), flush=True)
        time.sleep(600)
    """)
    try:
        line = proc.stdout.readline()
        assert line.startswith("JOB "), line + proc.stderr.read()
        job = line.split()[1]
        assert _job_state(cluster, job) == "['RUNNING'] ['ALIVE']"
    finally:
        proc.kill()
        proc.wait()
    # The job outlives its client for the grace period, then ends with its actor.
    deadline = time.monotonic() + GRACE_S + 30
    state = ""
    while time.monotonic() < deadline:
        state = _job_state(cluster, job)
        if "RUNNING" not in state and "ALIVE" not in state:
            break
        time.sleep(1)
    assert "RUNNING" not in state and "DEAD" in state, state


def test_reconnect_resumes_and_the_session_is_its_principals(cluster):
    view = cluster.token_of("view")
    proc = cluster.client_bg(f"""
        import time, manta
        from manta._private.runtime import context
        manta.init("ray://{cluster.address}")  # Ray's scheme, accepted as it is

        @manta.remote
        class Echo:
            def echo(self, x):
                return x

        e = Echo.remote()
        ref = manta.put(list(range(10)))
        rt = context.current()
        rt.io.post(rt.conn.abort, "test: the network dropped")
        time.sleep(0.5)
        # Within the grace period: the same session, its refs and actor still there.
        assert manta.get(ref) == list(range(10))
        assert manta.get(e.echo.remote(ref)) == list(range(10))
        print("SESSION", rt.info.session_id.hex(), flush=True)
        time.sleep(600)
    """)
    try:
        line = proc.stdout.readline()
        assert line.startswith("SESSION "), line + proc.stderr.read()
        sid = line.split()[1]
        # Another principal, knowing the session id, cannot take the session over.
        out = cluster.client(f"""
            from manta import exceptions as exc
            from manta._private.client.runtime import ClientRuntime
            from manta._private.config import Config
            from manta._private.protocol.identity import Credential
            rt = ClientRuntime("tcp:{cluster.address}", Credential(token="{view}"), Config())
            try:
                rt.start(resume=bytes.fromhex("{sid}"))
            except exc.AuthorizationError as e:
                print("REFUSED", e)
            finally:
                rt.shutdown()
        """, token=view)
        assert "REFUSED no client session of yours" in out.stdout, out.stdout + out.stderr
    finally:
        proc.kill()
        proc.wait()


def test_wrong_token_and_view_token(cluster):
    out = cluster.client(f"""
        import manta
        from manta import exceptions as exc
        try:
            manta.init("manta://{cluster.address}")
        except exc.AuthenticationError as e:
            print("REFUSED", e)
    """, token="0" * 64)
    assert "REFUSED" in out.stdout and "wrong token" in out.stdout, out.stdout + out.stderr
    view = cluster.token_of("view")
    out = cluster.client(f"""
        import manta
        from manta import exceptions as exc
        from manta.util.state import list_jobs
        manta.init("manta://{cluster.address}")
        assert list_jobs() and manta.nodes()  # a view token reads

        @manta.remote
        def f():
            return 1

        try:
            f.remote()
        except exc.AuthorizationError as e:
            print("NO SUBMIT", e)
        manta.shutdown()
    """, token=view)
    assert "NO SUBMIT" in out.stdout and "submit role" in out.stdout, out.stdout + out.stderr
