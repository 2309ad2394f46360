"""A node that freezes (SIGSTOP) is declared dead within the bound and its work moves."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from tests_support import BACKEND, manta_cli

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="freezes manta's own node processes"),
    pytest.mark.timeout(180),
]

psutil = pytest.importorskip("psutil")


def _node_pids(session_dir):
    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if session_dir in " ".join(p.info["cmdline"] or []):
                pids.add(p.pid)
                pids.update(c.pid for c in p.children(recursive=True))
        except psutil.Error:
            pass
    return pids


def test_frozen_node_is_declared_dead_and_its_work_moves():
    root = tempfile.mkdtemp(prefix="nf")
    env = {**os.environ, "MANTA_TMPDIR": root, "MANTA_NODE_TIMEOUT_S": "2", "MANTA_HEARTBEAT_S": "0.2"}
    env.pop("MANTA_TOKEN", None)

    def cli(*args):
        return manta_cli(env, *args)

    frozen: set[int] = set()
    proc = None
    try:
        out = cli("start", "--head", "--port", "0", "--num-cpus", "2")
        address = out.split("started at ")[1].split()[0]
        token = out.split("token file: ")[1].split()[0]
        cli("start", "--address", address, "--token-file", token, "--num-cpus", "2", "--resources", '{"doomed": 1}')
        b_session = max((os.path.join(root, d) for d in os.listdir(root)), key=os.path.getmtime)
        driver = textwrap.dedent(
            f"""
            import time, manta
            from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity
            manta.init(address="{address}")
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
            print("FREEZE", flush=True)
            assert input() == "frozen"
            start = time.time()
            results = manta.get(refs, timeout=60)
            assert [r[0] for r in results] == [i * i for i in range(4)]
            assert all(node != b for _, node in results), results
            assert manta.get(k.node.remote(), timeout=60) != b
            alive = [n for n in manta.nodes() if n["Alive"]]
            assert len(alive) == 1
            print(f"RECOVERED {{time.time() - start:.2f}}", flush=True)
            manta.shutdown()
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", driver], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "FREEZE"
            frozen = _node_pids(b_session)
            assert frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            froze_at = time.time()
            proc.stdin.write("frozen\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line.startswith("RECOVERED"), line + proc.stderr.read()
            took = time.time() - froze_at
            print(f"\nfrozen node: work recovered {took:.1f} s after SIGSTOP (bound 2 s + 2 s of re-run)")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if os.environ.get("KEEP"):
            os.system(f"cp -r {root} /tmp/nf-keep")
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
