"""A node that freezes (SIGSTOP) is declared dead within the bound and its work moves."""

import os
import signal
import subprocess

import pytest
from chaos_support import LocalCluster, read_json_line

pytestmark = pytest.mark.timeout(180)

def test_frozen_node_is_declared_dead_and_its_work_moves():
    with LocalCluster("chaos-f", MANTA_NODE_TIMEOUT_S="2", MANTA_HEARTBEAT_S="0.2") as cluster:
        frozen: set[int] = set()
        try:
            b_node = cluster.start_with_doomed_node()
            proc = cluster.driver("""
                import json, os, time
                from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity
                b = next(n["NodeID"] for n in manta.nodes() if "doomed" in n["Resources"])
                on_b = Affinity(b, soft=True)

                @manta.remote(max_retries=3)
                def slow(i, started):
                    open(f"{started}-{i}", "w").close()
                    time.sleep(2)
                    return i * i, manta.get_runtime_context().get_node_id()

                @manta.remote(max_restarts=1, max_task_retries=2)
                class Keeper:
                    def node(self):
                        return manta.get_runtime_context().get_node_id()

                k = Keeper.options(scheduling_strategy=on_b).remote()
                assert manta.get(k.node.remote()) == b
                started = os.path.join(os.environ["MANTA_TMPDIR"], "started")
                refs = [slow.options(scheduling_strategy=on_b).remote(i, started) for i in range(4)]
                deadline = time.time() + 60
                while sum(os.path.exists(f"{started}-{i}") for i in range(4)) < 2 and time.time() < deadline:
                    time.sleep(0.01)  # two run on b (its two CPUs), two wait there
                print("FREEZE {}", flush=True)
                assert input() == "frozen"
                start = time.time()
                while any(n["Alive"] for n in manta.nodes() if n["NodeID"] == b) and time.time() < start + 60:
                    time.sleep(0.05)
                detected = time.time() - start
                results = manta.get(refs, timeout=60)
                assert [r[0] for r in results] == [i * i for i in range(4)]
                assert all(node != b for _, node in results), results
                assert manta.get(k.node.remote(), timeout=60) != b
                alive = [n for n in manta.nodes() if n["Alive"]]
                assert len(alive) == 1
                print("RECOVERED", json.dumps({"detected": detected, "took": time.time() - start}), flush=True)
                manta.shutdown()
            """, stdin=subprocess.PIPE)
            read_json_line(proc, "FREEZE", 60)
            frozen = b_node.pids()
            assert frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            proc.stdin.write("frozen\n")
            proc.stdin.flush()
            done = read_json_line(proc, "RECOVERED", 90)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
            assert done["detected"] < 2 + 1.5, done  # the bound, plus a heartbeat round
            print(f"\nfrozen node: declared dead {done['detected']:.1f} s after SIGSTOP (bound 2 s); "
                  f"its tasks and actor were running elsewhere {done['took']:.1f} s after it")
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass


def test_lease_requests_waiting_on_a_frozen_node_come_back():
    """Two tasks take over the leases of two finished ones on node b while two
    lease requests still wait at b's agent; b freezes. Once b is declared dead
    those requests must come back, or the two retried tasks wait forever."""
    with LocalCluster("chaos-q", MANTA_NODE_TIMEOUT_S="2", MANTA_HEARTBEAT_S="0.2") as cluster:
        frozen: set[int] = set()
        try:
            b_node = cluster.start_with_doomed_node()
            proc = cluster.driver("""
                import json, os, time
                from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity
                b = next(n["NodeID"] for n in manta.nodes() if "doomed" in n["Resources"])
                started = os.path.join(os.environ["MANTA_TMPDIR"], "started")

                @manta.remote(max_retries=3, scheduling_strategy=Affinity(b, soft=True))
                def job(i, seconds):
                    open(f"{started}-{i}", "w").close()
                    time.sleep(seconds)
                    return i, manta.get_runtime_context().get_node_id()

                refs = [job.remote(i, 0.2 if i < 2 else 3) for i in range(4)]
                deadline = time.time() + 60
                while not (os.path.exists(f"{started}-2") and os.path.exists(f"{started}-3")):
                    assert time.time() < deadline
                    time.sleep(0.01)
                print("FREEZE {}", flush=True)
                assert input() == "frozen"
                results = manta.get(refs, timeout=60)
                assert [r[0] for r in results] == [0, 1, 2, 3]
                assert results[2][1] != b and results[3][1] != b, results
                print("RECOVERED {}", flush=True)
                manta.shutdown()
            """, stdin=subprocess.PIPE)
            read_json_line(proc, "FREEZE", 60)
            frozen = b_node.pids()
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            proc.stdin.write("frozen\n")
            proc.stdin.flush()
            read_json_line(proc, "RECOVERED", 90)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
