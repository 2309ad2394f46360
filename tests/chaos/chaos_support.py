"""Real clusters on one machine, and the killers the chaos tests turn on them.

A `LocalCluster` starts a head and nodes with manta's CLI, each node in its
own session directory, so the processes of one node can be found (and
killed) without touching anything else on the machine: only PIDs whose
command line names one of this cluster's session directories, and their
children, are ever signalled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field

import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Node:
    session_dir: str
    resources: dict = field(default_factory=dict)

    def pids(self) -> set[int]:
        """The node's agent, head (if any), fork server and workers."""
        out: set[int] = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if self.session_dir in " ".join(p.info["cmdline"] or []):
                    out.add(p.pid)
                    out.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                pass
        return out

    def worker_pids(self) -> list[int]:
        """Worker processes: the fork server's children."""
        out = []
        for pid in self.pids():
            try:
                p = psutil.Process(pid)
                parent = p.parent()
                if parent is not None and "zygote" in " ".join(parent.cmdline()) and "zygote" in " ".join(p.cmdline()):
                    out.append(pid)
            except psutil.Error:
                pass
        return out


class LocalCluster:
    def __init__(self, prefix: str, **env: str) -> None:
        self.root = tempfile.mkdtemp(prefix=prefix)
        self.env = {**os.environ, "MANTA_TMPDIR": self.root, **env}
        self.env.pop("MANTA_TOKEN", None)
        self.env.pop("MANTA_ADDRESS", None)
        pp = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *pp])
        self.address = ""
        self.token_file = ""
        self.nodes: list[Node] = []
        self.seen_pids: set[int] = set()
        self.killers: list[Killer] = []
        self.drivers: list[subprocess.Popen] = []

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, kind, value, tb) -> None:
        for k in self.killers:
            k.stop()
        leaked = self.stop()
        if kind is None:
            assert not leaked, f"processes left behind: {leaked}"

    def killer(self, period: float, choose) -> Killer:
        """Starts a killer, stopped when the cluster is."""
        k = Killer(period, choose)
        self.killers.append(k)
        k.start()
        return k

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=self.env,
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def _new_session(self, before: set[str]) -> str:
        (new,) = set(os.listdir(self.root)) - before
        return os.path.join(self.root, new)

    def start_head(self, *args: str, port: int = 0) -> Node:
        before = set(os.listdir(self.root))
        out = self.cli("start", "--head", "--port", str(port), *args)
        self.address = out.split("started at ")[1].split()[0]
        self.token_file = out.split("token file: ")[1].split()[0]
        node = Node(self._new_session(before))
        self.nodes.append(node)
        return node

    def add_node(self, *args: str) -> Node:
        before = set(os.listdir(self.root))
        self.cli("start", "--address", self.address, "--token-file", self.token_file, *args)
        node = Node(self._new_session(before))
        self.nodes.append(node)
        return node

    def head_pid(self) -> int:
        with open(os.path.join(self.nodes[0].session_dir, "cluster.json")) as f:
            return json.load(f)["pids"][0]

    def start_with_doomed_node(self) -> Node:
        """A head node and a second node, both of 2 CPUs; the second carries the
        resource "doomed" so drivers can find it. Returns the second."""
        self.start_head("--num-cpus", "2")
        return self.add_node("--num-cpus", "2", "--resources", '{"doomed": 1}')

    def all_pids(self) -> set[int]:
        pids: set[int] = set()
        for n in self.nodes:
            pids |= n.pids()
        self.seen_pids |= pids
        return pids

    def kill_node(self, node: Node) -> int:
        pids = node.pids()
        self.seen_pids |= pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def kill_when_asked(self, proc: subprocess.Popen, node: Node, then=None) -> int:
        """Waits for the driver's `KILL {}` line, SIGKILLs `node`, runs `then()`,
        and tells the driver `killed`. Returns how many processes died."""
        read_json_line(proc, "KILL", 90)
        killed = self.kill_node(node)
        if then is not None:
            then()
        proc.stdin.write("killed\n")
        proc.stdin.flush()
        return killed

    def driver(self, body: str, **popen: object) -> subprocess.Popen:
        """Starts a driver running `body` against this cluster (stdout/stderr piped)."""
        script = f"import manta\nmanta.init(address={self.address!r})\n" + textwrap.dedent(body)
        proc = subprocess.Popen([sys.executable, "-c", script], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]
        self.drivers.append(proc)
        return proc

    def stop(self) -> list[int]:
        """Stops everything; returns PIDs that were still alive afterwards (a leak)."""
        for proc in self.drivers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.all_pids()
        if os.environ.get("MANTA_KEEP_CHAOS"):  # for a post-mortem: the logs
            shutil.copytree(self.root, f"{os.environ['MANTA_KEEP_CHAOS']}/{os.path.basename(self.root)}",
                            ignore=shutil.ignore_patterns("*.sock", "spill"), dirs_exist_ok=True)
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=self.env, capture_output=True, timeout=60)
        deadline = time.time() + 10
        leaked = [p for p in self.seen_pids if psutil.pid_exists(p)]
        while leaked and time.time() < deadline:
            time.sleep(0.1)
            leaked = [p for p in leaked if _alive(p)]
        for pid in leaked:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        return leaked


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Killer(threading.Thread):
    """SIGKILLs one process every `period` seconds, picked by `choose()`."""

    def __init__(self, period: float, choose) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.choose = choose
        self.kills = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            pid = self.choose()
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass

    def stop(self) -> int:
        self.stopped.set()
        self.join(timeout=10)
        return self.kills


def busy_worker(node: Node, rng: random.Random):
    """A chooser: a random worker of `node` that used CPU since the last call."""
    last: dict[int, float] = {}

    def choose() -> int | None:
        busy, idle = [], []
        for pid in node.worker_pids():
            try:
                t = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.Error:
                continue
            (busy if t > last.get(pid, 0.0) else idle).append(pid)
            last[pid] = t
        pool = busy or idle
        return rng.choice(pool) if pool else None

    return choose


def read_json_line(proc: subprocess.Popen, prefix: str, timeout: float) -> dict:
    """Reads the driver's stdout until a line `PREFIX {json}`; fails on EOF or timeout."""
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])
    proc.kill()
    raise AssertionError(f"no {prefix} line from the driver; stdout:\n{''.join(lines)}\nstderr:\n{proc.stderr.read()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, in a temp dir; stopped by PID."""

    scheme = "redis"

    def command(self, binary: str) -> list[str]:
        """How to start it, on self.port in self.dir (subclasses configure it otherwise)."""
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--protected-mode", "yes"]

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: .ci/run installs it (apt-get install redis-server)"
        self.dir = tempfile.mkdtemp(prefix="redis")
        self.port = free_port()
        self.proc = subprocess.Popen(self.command(binary), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.__exit__()
            raise AssertionError("redis-server did not start")
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
