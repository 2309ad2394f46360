"""What the denial-of-service tests share: a real cluster in a temp session
root, raw sockets that speak (or mangle) manta's framing and handshake, a
victim driver in its own process, and a sampler of the services' memory.

The attacker is this test process: it dials the listeners itself, with a
blocking socket, so it can send what no manta process would. After
`manta.init` it also holds a job's pass, and authenticates with it through
the same sans-IO handshake the runtime uses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from manta._private.auth.credentials import Identity
from manta._private.auth.handshake import ClientHandshake

HEADER = struct.Struct("<I")


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


class Cluster:
    """`manta start --head` in a temp session root of its own; `stop()` ends it by its address."""

    def __init__(self, system_config: dict[str, Any] | None = None, num_cpus: int = 2) -> None:
        self.root = tempfile.mkdtemp(prefix="mdos")
        self.env = {**os.environ, "MANTA_TMPDIR": self.root, "PYTHONPATH": os.pathsep.join(sys.path)}
        for var in ("MANTA_TOKEN", "MANTA_ADDRESS"):
            self.env.pop(var, None)
        args = ["start", "--head", "--port", "0", "--num-cpus", str(num_cpus)]
        if system_config:
            args += ["--system-config", json.dumps(system_config)]
        try:
            cli(self.env, *args)
            (rec_path,) = [os.path.join(self.root, d, "cluster.json") for d in os.listdir(self.root)
                           if os.path.exists(os.path.join(self.root, d, "cluster.json"))]
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        with open(rec_path) as f:
            self.record = json.load(f)
        self.session_dir: str = self.record["session_dir"]
        self.head_tcp: str = self.record["head_address"]
        self.head_unix: str = self.record["head_local"]
        self.agent_unix: str = self.record["agent_address"]
        self.head_pid, self.agent_pid = self.record["pids"][:2]

    @property
    def address(self) -> str:
        return self.head_tcp.partition(":")[2]

    def log(self, name: str) -> str:
        with open(os.path.join(self.session_dir, "logs", f"{name}.log"), errors="replace") as f:
            return f.read()

    def audit(self) -> list[dict[str, Any]]:
        with open(os.path.join(self.session_dir, "audit.log")) as f:
            return [json.loads(line) for line in f if line.strip()]

    def alive(self) -> bool:
        return all(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in (self.head_pid, self.agent_pid))

    def rss(self) -> dict[str, int]:
        return {name: psutil.Process(pid).memory_info().rss
                for name, pid in (("head", self.head_pid), ("agent", self.agent_pid))}

    def token(self, *args: str) -> str:
        """A person's token made by `manta token create ARGS`."""
        return cli(self.env, "token", "create", *args).stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        try:
            cli(self.env, "stop", "--address", self.address, check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- the in-process driver ---------------------------------------------------


@contextmanager
def driver_in_process(cluster: Cluster, token: str = "", **init_args: Any) -> Iterator[Any]:
    """`manta.init` in this process, against `cluster` (with a person's `token` if
    given, else as the cluster's owner); yields its runtime."""
    import manta
    from manta._private.runtime import context

    saved = {k: os.environ.get(k) for k in ("MANTA_TMPDIR", "MANTA_TOKEN")}
    os.environ["MANTA_TMPDIR"] = cluster.root
    if token:
        os.environ["MANTA_TOKEN"] = token
    try:
        manta.init(address=cluster.address, **init_args)
        try:
            yield context.current()
        finally:
            manta.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


VICTIM = """
import json, os, sys, time
import manta
from manta._private.runtime import context

manta.init(address=sys.argv[1])

@manta.remote
def square(x):
    return x * x

@manta.remote
class Counter:
    def __init__(self):
        self.n = 0
    def add(self, k):
        self.n += k
        return self.n
    def address(self):
        return context.current().address
    def pid(self):
        return os.getpid()

c = Counter.remote()
assert manta.get(square.remote(3)) == 9
info = {"driver": context.current().address, "worker": manta.get(c.address.remote()),
        "worker_pid": manta.get(c.pid.remote()), "pid": os.getpid()}
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
# Wait to be asked to show that everything still works.
go = sys.argv[2] + ".go"
while not os.path.exists(go):
    time.sleep(0.05)
out = {"squares": manta.get([square.remote(i) for i in range(20)]), "count": manta.get(c.add.remote(5))}
print("VICTIM" + json.dumps(out), flush=True)
manta.shutdown()
"""


class Victim:
    """Another driver, in its own process, with an actor: it must go on being served."""

    def __init__(self, cluster: Cluster) -> None:
        self.dir = tempfile.mkdtemp(prefix="mdosv")
        self.info_path = os.path.join(self.dir, "info.json")
        self.out = open(os.path.join(self.dir, "out.txt"), "w+")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(VICTIM), cluster.address, self.info_path],
            env=cluster.env, stdout=self.out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while not os.path.exists(self.info_path):
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the victim driver did not start"
            time.sleep(0.05)
        with open(self.info_path) as f:
            self.info = json.load(f)

    def output(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    def alive(self) -> bool:
        return self.proc.poll() is None and psutil.pid_exists(self.info["worker_pid"])

    def finish(self) -> dict[str, Any]:
        """Asks it to run a task and an actor call; returns what it got."""
        try:
            open(self.info_path + ".go", "w").close()
            self.proc.wait(timeout=90)
            text = self.output()
            lines = [ln for ln in text.splitlines() if ln.startswith("VICTIM")]
            assert lines, text
            return json.loads(lines[-1][len("VICTIM"):])  # type: ignore[no-any-return]
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


EXPECTED = {"squares": [i * i for i in range(20)], "count": 5}


@contextmanager
def served_meanwhile(cluster: Cluster) -> Iterator[Victim]:
    """Another driver runs through the block; after it, it must still run its task and
    call its actor (what an attack must not take from everyone else)."""
    victim = Victim(cluster)
    try:
        yield victim
    except BaseException:
        victim.close()
        raise
    assert victim.finish() == EXPECTED


def cluster_fixture(system_config: dict[str, Any] | None = None) -> Any:
    """A module's cluster, with `system_config`."""
    import pytest

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[Cluster]:
        c = Cluster(system_config)
        try:
            yield c
        finally:
            c.stop()

    return cluster


# -- sockets -----------------------------------------------------------------


def dial(address: str, timeout: float = 5.0) -> socket.socket:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(rest)
    else:
        host, _, port = rest.rpartition(":")
        s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def read_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            part = s.recv(n - len(buf))
        except (ConnectionError, OSError):
            return None
        if not part:
            return None
        buf += part
    return buf


def read_frame(s: socket.socket) -> bytes | None:
    head = read_exact(s, 4)
    if head is None:
        return None
    return read_exact(s, HEADER.unpack(head)[0])


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """Whether the peer closes `s` within `timeout` (whatever it sends first is read and dropped)."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True


def authenticate(address: str, identity: Identity, timeout: float = 10.0) -> socket.socket:
    """A socket that completed the handshake with `identity`, ready for frames."""
    s = dial(address, timeout)
    hs = ClientHandshake(identity)
    challenge = read_frame(s)
    assert challenge is not None, f"{address} closed before its challenge"
    s.sendall(frame(hs.receive_challenge(challenge)))
    welcome = read_frame(s)
    assert welcome is not None, f"{address} closed during the handshake"
    hs.receive_welcome(welcome)
    return s


class RssSampler:
    """Samples the head's and agent's RSS every `every` seconds; `peak` is the largest seen."""

    def __init__(self, cluster: Cluster, every: float = 0.2) -> None:
        self.cluster = cluster
        self.every = every
        self.baseline = cluster.rss()
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                now = self.cluster.rss()
            except psutil.Error:
                return  # a process died: the liveness checks say so
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return {k: self.peak[k] - self.baseline[k] for k in self.peak}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
