"""Several nodes on one machine: spillback, custom-resource routing, object transfer."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from tests_support import BACKEND, manta_cli

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts manta nodes with manta's CLI"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="mn")
    env = {**os.environ, "MANTA_TMPDIR": root}
    env.pop("MANTA_TOKEN", None)

    def cli(*args):
        return manta_cli(env, *args)

    try:
        out = cli("start", "--head", "--port", "0", "--num-cpus", "1", "--object-store-memory", str(900 << 20))
        address = out.split("started at ")[1].split()[0]
        token_file = out.split("token file: ")[1].split()[0]
        cli("start", "--address", address, "--token-file", token_file, "--num-cpus", "2",
            "--resources", '{"b_only": 4}', "--object-store-memory", str(900 << 20))
        cli("start", "--address", address, "--token-file", token_file, "--num-cpus", "2",
            "--resources", '{"c_only": 4}', "--object-store-memory", str(900 << 20), "--labels", "zone=c")
        yield env, address
    finally:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def run_driver(env, body, address="auto"):
    script = f"import manta, os, hashlib\nimport numpy as np\nmanta.init(address={address!r})\n" + textwrap.dedent(body) + "\nmanta.shutdown()\nprint('DRIVER OK')\n"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=150)
    assert "DRIVER OK" in out.stdout, out.stdout + out.stderr
    return out.stdout


def test_custom_resources_steer_tasks_to_their_node(cluster):
    env, _ = cluster
    run_driver(env, """
        nodes = {n["NodeID"]: n["Resources"] for n in manta.nodes()}
        b = next(k for k, r in nodes.items() if "b_only" in r)
        c = next(k for k, r in nodes.items() if "c_only" in r)

        @manta.remote
        def where():
            return manta.get_runtime_context().get_node_id()

        assert set(manta.get([where.options(resources={"b_only": 1}).remote() for _ in range(6)])) == {b}
        assert set(manta.get([where.options(resources={"c_only": 1}).remote() for _ in range(6)])) == {c}
    """)


def test_label_selectors_steer_tasks_to_the_nodes_that_match(cluster):
    env, address = cluster
    run_driver(env, address=address, body="""
        c = next(n["NodeID"] for n in manta.nodes() if n["Labels"].get("zone") == "c")

        @manta.remote
        def where():
            return manta.get_runtime_context().get_node_id()

        on_c = [where.options(label_selector={"zone": "c"}).remote() for _ in range(6)]
        assert set(manta.get(on_c, timeout=60)) == {c}
        not_c = [where.options(label_selector={"zone": "!c"}).remote() for _ in range(6)]
        assert c not in set(manta.get(not_c, timeout=60))
        nowhere = where.options(label_selector={"zone": "moon"}).remote()
        ready, _ = manta.wait([nowhere], timeout=1.0)
        assert not ready  # waits for a node with that label
        manta.cancel(nowhere)
    """)


def test_busy_node_spills_work_to_others(cluster):
    env, _ = cluster
    run_driver(env, """
        import time

        @manta.remote
        def where():
            time.sleep(0.3)
            return manta.get_runtime_context().get_node_id()

        # 5 CPUs in the cluster, 1 on the driver's node: 10 slow tasks must spread.
        seen = set(manta.get([where.remote() for _ in range(10)]))
        assert len(seen) >= 2, seen
    """)


def test_500mb_object_made_on_one_node_is_read_on_two_others(cluster):
    env, address = cluster
    # A driver on the head's node (with "auto" it would use the newest node, C).
    out = run_driver(env, address=address, body="""
        @manta.remote(resources={"b_only": 1})
        def make():
            rng = np.random.default_rng(7)
            return rng.integers(0, 255, size=500 << 20, dtype=np.uint8)

        @manta.remote
        def digest(a):
            return hashlib.sha256(a).hexdigest(), manta.get_runtime_context().get_node_id()

        ref = make.remote()
        local = manta.get(ref)  # the driver's node pulls it
        expected = hashlib.sha256(local).hexdigest()
        on_c = digest.options(resources={"c_only": 1}).remote(ref)
        on_b = digest.options(resources={"b_only": 1}).remote(ref)
        (dc, _), (db, _) = manta.get([on_c, on_b])
        assert dc == db == expected
        # A second reader on a node that already has a copy needs no transfer.
        again = manta.get(digest.options(resources={"c_only": 1}).remote(ref))
        assert again[0] == expected
        print("OBJECT", ref.hex())
    """)
    oid = out.split("OBJECT ")[1].split()[0]
    pulls = 0
    root = env["MANTA_TMPDIR"]
    for session in os.listdir(root):
        try:
            with open(os.path.join(root, session, "logs", "agent.log")) as f:
                pulls += sum(1 for line in f if f"pulled object {oid}" in line)
        except OSError:
            pass
    # Made on B; copied once to the driver's node and once to C.
    assert pulls == 2


def test_actor_calls_across_nodes(cluster):
    env, _ = cluster
    run_driver(env, """
        @manta.remote(resources={"c_only": 1})
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self, k):
                self.n += k
                return self.n

        c = Counter.remote()
        assert manta.get([c.add.remote(1) for _ in range(50)])[-1] == 50
    """)


def test_spread_and_node_affinity(cluster):
    env, _ = cluster
    run_driver(env, """
        import time
        from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity

        nodes = [n["NodeID"] for n in manta.nodes() if n["Alive"]]

        @manta.remote(num_cpus=0.5)
        def where():
            time.sleep(0.2)
            return manta.get_runtime_context().get_node_id()

        spread = manta.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(9)])
        assert set(spread) == set(nodes), spread
        for node in nodes:
            pinned = where.options(scheduling_strategy=Affinity(node, soft=False))
            assert set(manta.get([pinned.remote() for _ in range(3)])) == {node}

        missing = "ab" * 16
        try:
            manta.get(where.options(scheduling_strategy=Affinity(missing, soft=False)).remote())
            raise AssertionError("hard affinity to a missing node ran")
        except manta.exceptions.TaskUnschedulableError:
            pass
        soft = manta.get(where.options(scheduling_strategy=Affinity(missing, soft=True)).remote())
        assert soft in nodes

        @manta.remote(num_cpus=0)
        class Where:
            def node(self):
                return manta.get_runtime_context().get_node_id()

        for node in nodes:
            a = Where.options(scheduling_strategy=Affinity(node, soft=False)).remote()
            assert manta.get(a.node.remote()) == node
        spread_actors = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
        assert set(manta.get([a.node.remote() for a in spread_actors])) == set(nodes)
    """)


def test_spread_right_after_pinned_tasks_uses_every_node(cluster):
    # The pinned tasks' leases are idle when the SPREAD tasks come: they must
    # go back at once, or they hold the other nodes' CPUs and every SPREAD
    # task lands on one node.
    env, _ = cluster
    run_driver(env, """
        import time
        from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity

        nodes = [n["NodeID"] for n in manta.nodes() if n["Alive"]]

        @manta.remote
        def where(t):
            time.sleep(t)
            return manta.get_runtime_context().get_node_id()

        for _ in range(3):
            manta.get([where.options(scheduling_strategy=Affinity(n, soft=False)).remote(0) for n in nodes])
            spread = manta.get([where.options(scheduling_strategy="SPREAD").remote(0.05) for _ in range(12)])
            assert set(spread) == set(nodes), spread
    """)


def test_placement_groups_across_nodes(cluster):
    env, _ = cluster
    run_driver(env, """
        import time
        from manta.util import placement_group, placement_group_table, remove_placement_group
        from manta.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup

        @manta.remote(num_cpus=0.5)
        def where():
            return manta.get_runtime_context().get_node_id()

        def nodes_of(pg, n):
            return [manta.get(where.options(num_cpus=0.1, scheduling_strategy=InGroup(pg, placement_group_bundle_index=i)).remote())
                    for i in range(n)]

        free_before = manta.available_resources()["CPU"]

        ss = placement_group([{"CPU": 0.5}] * 3, strategy="STRICT_SPREAD")
        assert ss.wait(30)
        got = nodes_of(ss, 3)
        assert len(set(got)) == 3
        assert sorted(placement_group_table(ss)["bundles_to_node_id"].values()) == sorted(got)

        sp = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
        assert sp.wait(30)
        assert len(set(nodes_of(sp, 2))) == 1

        pack = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="PACK")
        assert pack.wait(30)
        spread = placement_group([{"CPU": 0.25}] * 3, strategy="SPREAD")
        assert spread.wait(30)
        assert len(set(nodes_of(spread, 3))) == 3

        too_many = placement_group([{"CPU": 0.1}] * 4, strategy="STRICT_SPREAD")
        assert not too_many.wait(1)  # only three nodes
        no_room = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
        assert not no_room.wait(1)

        for pg in (ss, sp, pack, spread, too_many, no_room):
            remove_placement_group(pg)
        deadline = time.time() + 20
        while manta.available_resources().get("CPU") != free_before and time.time() < deadline:
            time.sleep(0.1)
        # All or nothing: the groups that never fitted held nothing back.
        assert manta.available_resources().get("CPU") == free_before
    """)


@pytest.fixture
def small_stores():
    """Two nodes with 75 MiB stores that never spill."""
    root = tempfile.mkdtemp(prefix="mnf")
    env = {**os.environ, "MANTA_TMPDIR": root}
    env.pop("MANTA_TOKEN", None)
    node = ["--num-cpus", "1", "--object-store-memory", str(75 << 20),
            "--system-config", '{"automatic_object_spilling_enabled": false}']
    try:
        out = manta_cli(env, "start", "--head", "--port", "0", *node)
        address = out.split("started at ")[1].split()[0]
        token_file = out.split("token file: ")[1].split()[0]
        manta_cli(env, "start", "--address", address, "--token-file", token_file, *node)
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_wait_fetch_local_counts_a_value_ready_once_it_is_in_this_nodes_store(small_stores):
    run_driver(small_stores, """
        import time
        from manta.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = manta.get_runtime_context().get_node_id()
        there = next(n["NodeID"] for n in manta.nodes() if n["NodeID"] != here)

        @manta.remote(scheduling_strategy=NodeAffinitySchedulingStrategy(there, soft=False))
        def make(size):
            return bytearray(size)

        mine = manta.put(bytearray(40 << 20))  # most of this node's store, which cannot spill
        far = make.remote(40 << 20)
        ready, _ = manta.wait([far], fetch_local=False, timeout=60)
        assert ready == [far]
        # No room here for a copy: not ready while it cannot be pulled...
        start = time.time()
        ready, rest = manta.wait([far], fetch_local=True, timeout=1)
        assert (ready, rest) == ([], [far]) and time.time() - start >= 1
        # A value that becomes ready here meanwhile is what a wait for one returns.
        @manta.remote(num_cpus=0)
        def soon():
            time.sleep(1)
            return 1

        nearby = soon.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        ready, _ = manta.wait([far, nearby], num_returns=1, fetch_local=True, timeout=30)
        assert ready == [nearby]
        # ...and the far one is ready once there is room.
        del mine
        ready, _ = manta.wait([far], fetch_local=True, timeout=60)
        assert ready == [far]
        assert len(manta.get(far)) == 40 << 20
        small = make.remote(100)
        assert manta.wait([small], fetch_local=True, timeout=60)[0] == [small]  # inline values are here already
    """)
