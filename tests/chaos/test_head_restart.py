"""The head killed mid-workload: on Redis it comes back with its state; without, nothing hangs."""

import os
import signal
import subprocess
import time

import pytest
from chaos_support import LocalCluster, RedisServer, free_port, read_json_line

pytestmark = pytest.mark.timeout(240)

SETUP = """
import json
from manta.experimental import internal_kv as kv
from manta.util.placement_group import placement_group

@manta.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

c = Counter.options(name="keeper", namespace="chaos", lifetime="detached").remote()
assert manta.get([c.add.remote() for _ in range(5)])[-1] == 5
kv._internal_kv_put(b"config", b"v1", namespace="chaos")
pg = placement_group([{"CPU": 0.5}], name="kept", lifetime="detached")
manta.get(pg.ready(), timeout=30)
print("SETUP", json.dumps({"job": manta.get_runtime_context().get_job_id(),
                          "nodes": sorted(n["NodeID"] for n in manta.nodes())}), flush=True)
manta.shutdown()
"""

WORKLOAD = """
import json, sys, threading, time
from manta.experimental import internal_kv as kv
from manta.util import state
from manta.util.placement_group import placement_group_table

@manta.remote
def square(i):
    return i * i

@manta.remote(max_restarts=-1, max_task_retries=-1)
class Echo:
    def echo(self, i):
        return i

echo = Echo.remote()
keeper = manta.get_actor("keeper", namespace="chaos")
manta.get([square.remote(1), echo.echo.remote(1)])
done = {"tasks": 0, "calls": 0, "wrong": 0}
stop = threading.Event()
progress = threading.Condition()

def rounds_after(n, count, timeout=60):
    # Until the workload has done `count` more rounds than at `n` tasks.
    with progress:
        progress.wait_for(lambda: done["tasks"] >= n + 20 * count, timeout)

def work():
    i = 0
    while not stop.is_set():
        i += 1
        refs = [square.remote(j) for j in range(i, i + 20)]
        calls = [echo.echo.remote(j) for j in range(i, i + 20)]
        ok = manta.get(refs, timeout=120) == [j * j for j in range(i, i + 20)]
        ok = ok and manta.get(calls, timeout=120) == list(range(i, i + 20))
        with progress:
            done["wrong"] += not ok
            done["tasks"] += 20
            done["calls"] += 20
            progress.notify_all()

t = threading.Thread(target=work)
t.start()
rounds_after(0, 3)
print("RUNNING {}", flush=True)
assert sys.stdin.readline().strip() == "killed"
at_kill = dict(done)
assert sys.stdin.readline().strip() == "restarted"
during = {k: done[k] - at_kill[k] for k in ("tasks", "calls")}
restarted = time.time()
# The head's own services, answered by the restarted head from Redis.
assert manta.get(keeper.add.remote(), timeout=60) == 6
again = manta.get_actor("keeper", namespace="chaos")
assert manta.get(again.add.remote(), timeout=60) == 7
assert kv._internal_kv_get(b"config", namespace="chaos") == b"v1"
kv._internal_kv_put(b"after", b"restart", namespace="chaos")
groups = {g["name"]: g["state"] for g in placement_group_table().values()}
assert groups.get("kept") == "CREATED", groups
jobs = [(j.job_id, j.status) for j in state.list_jobs()]
nodes = sorted(n["NodeID"] for n in manta.nodes() if n["Alive"])
# A new actor and new tasks need the head too.
fresh = Echo.remote()
assert manta.get(fresh.echo.remote(42), timeout=60) == 42
answered = time.time() - restarted
rounds_after(done["tasks"], 3)  # and the workload carries on
stop.set()
t.join(timeout=120)
print("DONE", json.dumps({"during": during, "total": done, "jobs": jobs, "nodes": nodes,
                          "answered": answered,
                          "me": manta.get_runtime_context().get_job_id()}), flush=True)
manta.shutdown()
"""


def test_head_killed_and_restarted_on_redis_brings_everything_back():
    with RedisServer() as redis, LocalCluster("chaos-h", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port = free_port()
        cluster.start_head("--num-cpus", "2", "--storage", redis.url, port=port)
        cluster.add_node("--num-cpus", "2")
        setup = cluster.driver(SETUP)
        before = read_json_line(setup, "SETUP", 90)
        assert setup.wait(timeout=30) == 0, setup.stderr.read()

        proc = cluster.driver(WORKLOAD, stdin=subprocess.PIPE)
        read_json_line(proc, "RUNNING", 90)
        head = cluster.head_pid()
        os.kill(head, signal.SIGKILL)
        killed_at = time.time()
        proc.stdin.write("killed\n")
        proc.stdin.flush()
        # An outage the workload has to ride out: restart once both nodes noticed it.
        wait_for_logs(cluster, "lost the head at", timeout=30)
        out = cluster.cli("start", "--head", "--port", str(port), "--storage", redis.url)
        assert "restarted" in out, out
        back_at = time.time()
        status = cluster.cli("status")
        assert f"head state redis at 127.0.0.1:{redis.port}" in status, status
        proc.stdin.write("restarted\n")
        proc.stdin.flush()
        done = read_json_line(proc, "DONE", 150)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert done["total"]["wrong"] == 0, done
        assert done["nodes"] == before["nodes"], (done, before)  # both re-registered, same ids
        jobs = dict(map(tuple, done["jobs"]))
        assert jobs[before["job"]] == "SUCCEEDED" and jobs[done["me"]] == "RUNNING", jobs
        assert done["during"]["tasks"] > 0 and done["during"]["calls"] > 0, done
        print(f"\nhead restart on Redis: head down {back_at - killed_at:.1f} s; the workload ran "
              f"{done['during']['tasks']} tasks and {done['during']['calls']} actor calls meanwhile; "
              f"named actor, KV, placement group, jobs and both nodes back, and the head answering "
              f"{done['answered']:.1f} s after its restart")


def test_without_redis_a_dead_head_ends_nodes_and_drivers_with_a_clear_message():
    with LocalCluster("chaos-x") as cluster:
        cluster.start_head("--num-cpus", "1")
        node = cluster.add_node("--num-cpus", "1")
        proc = cluster.driver("""
            import time
            @manta.remote
            def forever():
                time.sleep(600)
            ref = forever.remote()
            print("RUNNING {}", flush=True)
            start = time.time()
            try:
                manta.get(ref, timeout=60)
            except manta.exceptions.RaySystemError as e:
                print("RAISED", time.time() - start, e, flush=True)
        """)
        read_json_line(proc, "RUNNING", 60)
        node_pids = node.pids()
        os.kill(cluster.head_pid(), signal.SIGKILL)
        killed = time.time()
        line = proc.stdout.readline()
        assert line.startswith("RAISED"), line + proc.stderr.read()
        assert "kept its state in memory" in line, line
        deadline = killed + 10
        while time.time() < deadline and any(_alive(p) for p in node_pids):
            time.sleep(0.1)
        exited = time.time() - killed
        assert not any(_alive(p) for p in node_pids), "the node outlived its head"
        log = open(os.path.join(node.session_dir, "logs", "agent.log")).read()
        assert "kept its state in memory" in log and "stopping this node" in log, log[-2000:]
        print(f"\nhead killed without Redis: driver told in {float(line.split()[1]):.1f} s, "
              f"the other node's processes gone in {exited:.1f} s")


def wait_for_logs(cluster, text, timeout):
    """Until every node's agent log says `text` (or the deadline passes)."""
    deadline = time.time() + timeout
    logs = [os.path.join(n.session_dir, "logs", "agent.log") for n in cluster.nodes]
    while time.time() < deadline:
        if all(text in open(path).read() for path in logs):
            return
        time.sleep(0.05)
    raise AssertionError(f"not every agent logged {text!r} within {timeout} s")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
