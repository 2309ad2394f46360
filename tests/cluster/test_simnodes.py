"""A real head and 20 simulated nodes (sim/, docs/simulation.md): the head lists
them, places tasks, an actor and a placement group on them, and declares one
dead when it crashes."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from tests_support import BACKEND, manta_cli

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="simulated nodes are manta's"),
    pytest.mark.timeout(60),
]
NODES = 20


@pytest.fixture
def head_and_fleet():
    root = tempfile.mkdtemp(prefix="sim")
    env = {**os.environ, "MANTA_TMPDIR": root}
    env.pop("MANTA_TOKEN", None)
    fleet = None
    try:
        out = manta_cli(env, "start", "--head", "--port", "0", "--num-cpus", "0", "--include-dashboard", "false",
                        "--object-store-memory", str(100 << 20))
        address = out.split("started at ")[1].split()[0]
        token_file = out.split("token file: ")[1].split()[0]
        fleet = subprocess.Popen(
            [sys.executable, "-m", "manta._private.sim.main", "--head", f"tcp:{address}", "--token-file", token_file,
             "--nodes", str(NODES), "--cpus", "2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        ready = json.loads(fleet.stdout.readline())["ready"]
        yield env, address, fleet, ready["nodes"]
    finally:
        if fleet is not None:
            fleet.kill()  # by the Popen's own PID
            fleet.wait()
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def run_driver(env, address, body):
    script = f"import manta, time\nmanta.init(address={address!r})\n" + textwrap.dedent(body) + "\nprint('DRIVER OK')\n"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=40)
    assert "DRIVER OK" in out.stdout, out.stdout + out.stderr
    return out.stdout


def test_the_head_sees_simulated_nodes_places_work_on_them_and_sees_one_die(head_and_fleet):
    env, address, fleet, sim_ids = head_and_fleet
    run_driver(env, address, f"""
        sim = set({sim_ids!r})
        deadline = time.monotonic() + 10
        while len(sim & {{n["NodeID"] for n in manta.nodes() if n["Alive"]}}) < {NODES}:
            assert time.monotonic() < deadline, manta.nodes()
            time.sleep(0.05)
        assert all(n["Resources"]["CPU"] == 2 for n in manta.nodes() if n["NodeID"] in sim)

        @manta.remote
        def task(duration):
            raise AssertionError("a simulated node runs no user code")

        # The driver's node has no CPU: every task spills to a simulated node,
        # which answers with its id after the task's duration.
        t0 = time.monotonic()
        where = manta.get([task.options(scheduling_strategy="SPREAD").remote(0.05) for _ in range(200)], timeout=20)
        assert set(where) <= sim and len(set(where)) == {NODES}, set(where)
        assert time.monotonic() - t0 >= 0.05 * 200 / ({NODES} * 2)

        @manta.remote(num_cpus=1)
        class Actor:
            def where(self):
                raise AssertionError("never runs")

        a = Actor.remote()
        assert manta.get(a.where.remote(), timeout=10) in sim
        from manta.util.placement_group import placement_group
        pg = placement_group([{{"CPU": 1}}] * 4, strategy="STRICT_SPREAD")
        assert manta.get(pg.ready(), timeout=10)
    """)
    fleet.stdin.write("kill 3\n")
    fleet.stdin.flush()
    killed = json.loads(fleet.stdout.readline())["killed"]
    assert killed == sim_ids[3]
    run_driver(env, address, f"""
        deadline = time.monotonic() + 5
        while {{n["NodeID"]: n["Alive"] for n in manta.nodes()}}[{killed!r}]:
            assert time.monotonic() < deadline, "the head did not see the crashed node die"
            time.sleep(0.02)
        alive = sum(n["Alive"] for n in manta.nodes())
        assert alive == {NODES}, alive  # the head's own node and the 19 others
    """)
