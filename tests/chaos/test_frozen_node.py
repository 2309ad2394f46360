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
                import json, time
                from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity
                b = next(n["NodeID"] for n in manta.nodes() if "doomed" in n["Resources"])
                on_b = Affinity(b, soft=True)

                @manta.remote(max_retries=3)
                def slow(i):
                    time.sleep(2)
                    return i * i, manta.get_runtime_context().get_node_id()

                @manta.remote(max_restarts=1, max_task_retries=2)
                class Keeper:
                    def node(self):
                        return manta.get_runtime_context().get_node_id()

                k = Keeper.options(scheduling_strategy=on_b).remote()
                assert manta.get(k.node.remote()) == b
                refs = [slow.options(scheduling_strategy=on_b).remote(i) for i in range(4)]
                time.sleep(0.5)  # running on b now
                print("FREEZE {}", flush=True)
                assert input() == "frozen"
                start = time.time()
                while any(n["Alive"] for n in manta.nodes() if n["NodeID"] == b):
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
