"""`manta logs`, `manta stack`, `manta memory`, `manta timeline` and
`manta status --watch` against one real cluster of two nodes (`manta start
--head`, and a second node joined to it, with a resource of its own), with
one driver that stays connected while the tests look at it: it ran tasks
that printed (one on the second node), holds actors sleeping in functions
of their own (one on each node), a value read from the store (pinned) and
objects the store had to spill.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from manta._private.node.tools import py_spy
from tests.security.integrity_support import Cluster, cluster

DRIVER = """
import json, os, sys, time
import numpy as np
import manta

manta.init(address="auto", namespace="obs")

@manta.remote
def emit(tag):
    print(f"line-of-{tag}")
    print(f"err-of-{tag}", file=sys.stderr)
    return tag

@manta.remote
class Sleeper:
    def where(self):
        print("sleeper-says-hello")
        return os.getpid()

    def deep_sleep_marker(self):
        time.sleep(600)

@manta.remote(resources={"far": 1})
class FarSleeper:
    def far_sleep_marker(self):
        print("far-actor-sleeps")
        time.sleep(600)

refs = [emit.remote(f"t{i}") for i in range(4)]
assert manta.get(refs) == [f"t{i}" for i in range(4)]
far = emit.options(resources={"far": 1}).remote("far")
assert manta.get(far) == "far"
far_node = manta.get(manta.remote(lambda: manta.get_runtime_context().get_node_id()).options(
    resources={"far": 1}).remote())
sleeper = Sleeper.remote()
actor_pid = manta.get(sleeper.where.remote())
sleeper.deep_sleep_marker.remote()
far_sleeper = FarSleeper.remote()
far_sleeper.far_sleep_marker.remote()

# Read from the store and kept: pinned while `pinned_value` lives.
pinned = manta.put(np.ones(4 << 20))  # 32 MiB
pinned_value = manta.get(pinned)
# More than the store holds besides: the oldest nobody reads go to disk.
held = [manta.put(np.full(4 << 20, i, dtype=np.float64)) for i in range(3)]

info = {
    "tasks": [r.task_id().hex() for r in refs],
    "far_task": far.task_id().hex(),
    "far_node": far_node,
    "actor": sleeper._actor_id.hex(),
    "far_actor": far_sleeper._actor_id.hex(),
    "actor_pid": actor_pid,
    "pinned": pinned.hex(),
    "held": [h.hex() for h in held],
}
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while not os.path.exists(sys.argv[1] + ".stop"):
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def obs() -> Iterator[tuple[Cluster, dict]]:
    with cluster("mt-obs-", "--num-cpus", "3", "--object-store-memory", str(80 << 20)) as c:
        head_session = os.path.dirname(glob.glob(os.path.join(c.root, "s*", "head.sock"))[0])
        c.cli("start", "--address", c.address, "--token-file", os.path.join(head_session, "token"), "--num-cpus", "1",
              "--resources", '{"far": 2}', "--object-store-memory", str(80 << 20))
        info_path = os.path.join(c.root, "driver.json")
        script = os.path.join(c.root, "driver.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(DRIVER))
        driver = subprocess.Popen([sys.executable, script, info_path], env=c.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            while not os.path.exists(info_path):
                if driver.poll() is not None or time.monotonic() > deadline:
                    out = driver.communicate(timeout=10)[0] if driver.poll() is not None else ""
                    pytest.fail(f"the driver did not get ready: {out}")
                time.sleep(0.1)
            with open(info_path) as f:
                info = json.load(f)
            info["session"] = head_session
            yield c, info
        finally:
            open(info_path + ".stop", "w").close()
            try:
                driver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()


def flat(text: str) -> str:
    """Text as one line (the console wraps messages at its width)."""
    return " ".join(text.split())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lines:
    """A command's stdout, read line by line on a thread (for --follow and --watch)."""

    def __init__(self, c: Cluster, *args: str) -> None:
        # Ctrl-C's default action in the command, whatever this process has: a
        # suite started as a background job (`make test &`) ignores SIGINT, the
        # command would inherit that, and `interrupt` would not end it.
        self.proc = subprocess.Popen([sys.executable, "-m", "manta.cli", *args], env=c.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.seen} (stderr: {self._stderr()})"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                assert self.proc.poll() is None, f"exited early: {self.seen} {self._stderr()}"

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def test_a_tasks_lines_by_its_id(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    for i, task in enumerate(info["tasks"]):
        out = c.cli("logs", "--task-id", task).stdout
        assert f"line-of-t{i}" in out
        # Only its own lines, though its worker ran others too.
        assert not any(f"line-of-t{j}" in out for j in range(4) if j != i), out
        err = c.cli("logs", "--task-id", task, "--err").stdout
        assert f"err-of-t{i}" in err and "line-of" not in err
    # Ray's form.
    assert "line-of-t0" in c.cli("logs", "task", "--id", info["tasks"][0]).stdout


def test_listing_and_an_actors_log(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    listing = c.cli("logs").stdout
    assert "agent.log" in listing and f"-{info['actor_pid']}.out" in listing
    assert "sleeper-says-hello" in c.cli("logs", "--actor-id", info["actor"]).stdout
    assert "sleeper-says-hello" in c.cli("logs", "--pid", str(info["actor_pid"])).stdout
    assert "sleeper-says-hello" not in c.cli("logs", "--pid", str(info["actor_pid"]), "--err").stdout
    # A name outside the log directories is refused, not opened.
    bad = c.cli("logs", "../token", check=False)
    assert bad.returncode != 0 and "not a log file" in flat(bad.stderr)


def test_follow_keeps_reading_across_rotation_and_truncation(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    path = os.path.join(info["session"], "logs", "rotating.log")
    with open(path, "w") as f:
        f.write("before-follow\n")
    follow = Lines(c, "logs", "rotating.log", "--follow", "--interval", "0.1")
    try:
        follow.wait_for("before-follow")
        with open(path, "a") as f:
            f.write("appended-1\n")
        follow.wait_for("appended-1")
        os.rename(path, path + ".1")  # as logrotate does: a new file takes the name
        with open(path, "w") as f:
            f.write("after-rotation\n")
        follow.wait_for("after-rotation")
        with open(path, "w") as f:  # truncated in place (copytruncate)
            f.write("trunc\n")
        follow.wait_for("trunc")
        with open(path, "a") as f:
            f.write("appended-2\n")
        follow.wait_for("appended-2")
    finally:
        assert follow.interrupt() in (0, -signal.SIGINT, 130)
    assert sum("appended-1" in line for line in follow.seen) == 1


def test_timeline_has_the_tasks_run(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    out = os.path.join(c.root, "trace.json")
    assert "wrote" in c.cli("timeline", "--output", out).stdout
    with open(out) as f:
        trace = json.load(f)
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    ran = {e["args"]["task_id"]: e for e in events}
    for task in info["tasks"]:
        e = ran[task]
        assert e["name"] == "emit" and e["args"]["state"] == "FINISHED" and e["dur"] >= 0
    sleeping = [e for e in events if e["name"].endswith("deep_sleep_marker")]
    assert sleeping and sleeping[0]["args"]["state"] == "RUNNING"
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert any(n.startswith("node ") for n in names) and any(n.startswith("worker ") for n in names)


def test_memory_shows_a_pinned_and_a_spilled_object(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    out = c.cli("memory", "--units", "MB").stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and len(line.split()[0]) >= 32}
    assert "PINNED" in rows[info["pinned"]] and "32.00 MB" in rows[info["pinned"]], out
    assert any("SPILLED" in rows.get(h, "") for h in info["held"]), out
    assert "pid" in rows[info["pinned"]] and "(driver)" in rows[info["pinned"]]  # its owner
    by_state = c.cli("memory", "--group-by", "STATE", "--stats-only").stdout
    assert "spilled" in by_state and "pinned" in by_state


def py_spy_cannot_attach() -> str:
    """Why py-spy cannot read a process of ours here ("" when it can).

    Containers without CAP_SYS_PTRACE, or with a strict Yama scope, refuse
    the attach; `manta stack` then reports that (and `auto` falls back to
    faulthandler), but a py-spy-only test has nothing to check."""
    spy = py_spy()
    if not spy:
        return "py-spy is not installed"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        out = subprocess.run([spy, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=30)
        return "" if out.returncode == 0 and out.stdout.strip() else f"py-spy cannot attach here: {out.stderr[-300:]}"
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("method", ["py-spy", "faulthandler"])
def test_stack_of_a_sleeping_actor(obs: tuple[Cluster, dict], method: str) -> None:
    c, info = obs
    if method == "py-spy" and (why := py_spy_cannot_attach()):
        pytest.skip(why)
    done = c.cli("stack", "--actor-id", info["actor"], "--method", method)
    out = done.stdout
    assert "deep_sleep_marker" in out, out + done.stderr
    assert f"by {method}" in out
    everyone = c.cli("stack", "--method", method).stdout
    assert "deep_sleep_marker" in everyone and f"worker pid {info['actor_pid']}" in everyone


def test_status_watch_refreshes_until_interrupted(obs: tuple[Cluster, dict]) -> None:
    c, _ = obs
    watch = Lines(c, "status", "--watch", "--interval", "0.2")
    try:
        watch.wait_for("pending demands")
        count = sum("cluster at" in line for line in watch.seen)
        deadline = time.monotonic() + 20
        while sum("cluster at" in line for line in watch.seen) < count + 2:
            assert time.monotonic() < deadline, watch.seen
            watch.seen.append(watch.lines.get(timeout=10))
    finally:
        assert watch.interrupt() == 0


def test_who_may_read_logs_and_stacks(obs: tuple[Cluster, dict]) -> None:
    c, info = obs

    def token(*args: str) -> dict[str, str]:
        made = c.cli("token", "create", *args).stdout.strip().splitlines()[-1]
        return {**c.env, "MANTA_TOKEN": made}

    def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True, text=True,
                              timeout=90)

    own = token("--role", "view", "--namespace", "obs")
    other = token("--role", "view", "--namespace", "elsewhere")
    task = info["tasks"][0]
    assert "line-of-t0" in cli(own, "logs", "--task-id", task).stdout
    refused = cli(other, "logs", "--task-id", task)
    assert refused.returncode != 0 and "may not read" in flat(refused.stderr)
    # A node's own log needs an admin.
    node_log = cli(own, "logs", "head.log")
    assert node_log.returncode != 0 and "admin" in flat(node_log.stderr)
    listing = cli(other, "logs").stdout
    assert "worker_logs/" not in listing and "agent.log" not in listing
    stack = cli(other, "stack", "--actor-id", info["actor"])
    assert stack.returncode != 0 and "may not read" in flat(stack.stderr)
    assert "deep_sleep_marker" in cli(own, "stack", "--actor-id", info["actor"], "--method", "faulthandler").stdout
    records = [r for r in c.audit_records() if r.get("outcome") != "allowed" and r.get("action") == "request.read_log"]
    assert records, "the refusal was not audited"


def test_tqdm_bars_in_tasks_are_drawn_once_per_update_on_the_driver(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    out = c.driver("""
        import time
        from manta.experimental import tqdm_ray
        from manta._private.protocol.tool_messages import PROGRESS_PREFIX

        @manta.remote
        def work(n, tag):
            bar = tqdm_ray.tqdm(total=n, desc=f"bar-{tag}", flush_interval_s=0)
            for i in range(n):
                print(f"plain-{tag}-{i}")
                bar.update(1)
            bar.close()
            return tag

        refs = [work.remote(3, t) for t in "ab"]
        got = [x for x in tqdm_ray.tqdm(manta.util.as_completed(refs, chunk_size=1), total=2, desc="driver-bar")]
        assert sorted(got) == ["a", "b"], got
    """, namespace="obs").stdout
    lines = out.splitlines()
    assert not any("__manta_progress__" in line for line in lines), out
    for tag in "ab":
        for n in range(4):
            assert sum(line.startswith(f"bar-{tag}:") and f" {n}/3 " in line for line in lines) == 1, out
        assert sum(f"plain-{tag}-" in line for line in lines) == 3
    assert sum(line.startswith("driver-bar:") and " 2/2 " in line for line in lines) == 1, out
    # Bars' states are kept out of the workers' log files.
    logs = c.cli("logs", "worker_logs/*").stdout
    assert "worker_logs/" in logs
    for path in glob.glob(os.path.join(c.root, "s*", "worker_logs", "*.out")):
        with open(path) as f:
            assert "__manta_progress__" not in f.read()


def test_across_nodes_the_node_holding_it_answers(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    listing = c.cli("logs").stdout
    assert listing.count("node ") >= 2 and listing.count("agent.log") == 2, listing
    assert "line-of-far" in c.cli("logs", "--task-id", info["far_task"]).stdout
    assert "far-actor-sleeps" in c.cli("logs", "--actor-id", info["far_actor"], "--tail", "5").stdout
    assert "far_sleep_marker" in c.cli("stack", "--actor-id", info["far_actor"]).stdout
    # A file every node has: which one is asked for.
    both = c.cli("logs", "agent.log", check=False)
    assert both.returncode != 0 and "--node-id" in flat(both.stderr)
    out = os.path.join(c.root, "trace2.json")
    c.cli("timeline", "--output", out)
    with open(out) as f:
        trace = json.load(f)
    far_task = next(e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"]["task_id"] == info["far_task"])
    rows = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert len(rows) >= 2 and rows[far_task["pid"]] == f"node {info['far_node'][:12]}", (rows, far_task["args"])
    assert c.cli("memory", "--stats-only").stdout.count("127.0.0.1") >= 2


def test_the_state_apis_get_log_and_list_logs_within_a_job(obs: tuple[Cluster, dict]) -> None:
    c, info = obs
    made = c.cli("token", "create", "--role", "submit", "--namespace", "mine").stdout.strip().splitlines()[-1]
    out = c.driver(f"""
        import time
        from manta.util.state import get_log, list_logs

        @manta.remote
        def mine():
            print("my-own-line")

        ref = mine.remote()
        manta.get(ref)
        deadline = time.time() + 20
        while True:  # the task's record reaches the head in the next batch of its owner's
            try:
                lines = list(get_log(task_id=ref.task_id().hex()))
                break
            except Exception:
                assert time.time() < deadline
                time.sleep(0.2)
        print("OWN", lines)
        try:
            list(get_log(task_id={info["tasks"][0]!r}))
            print("OTHER read")
        except Exception as e:
            print("OTHER", type(e).__name__)
        print("LIST", sorted(list_logs()))
    """, namespace="mine", env={**c.env, "MANTA_TOKEN": made}).stdout
    assert "OWN ['my-own-line']" in out, out
    assert "OTHER AuthorizationError" in out, out  # another job's task
    assert "LIST ['worker']" in out, out  # its own workers' files only: not the nodes' logs


def test_as_completed_and_map_unordered_yield_as_tasks_finish(obs: tuple[Cluster, dict]) -> None:
    c, _ = obs
    out = c.result("""
        import time

        @manta.remote
        def nap(x):
            time.sleep(x)
            return x

        refs = [nap.remote(3.0), nap.remote(0.0)]
        first = next(iter(manta.util.as_completed(refs, chunk_size=1)))
        back = list(manta.util.as_completed(refs, yield_obj_refs=True))
        unordered = sorted(manta.util.map_unordered(nap, [0, 0, 0, 0, 0], backpressure_size=2, chunk_size=1))
        print(json.dumps([first, sorted(r.hex() for r in back) == sorted(r.hex() for r in refs), unordered]))
    """)
    assert out == [0.0, True, [0, 0, 0, 0, 0]]
