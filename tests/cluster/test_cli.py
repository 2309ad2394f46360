"""`manta start/stop/status` and drivers joining a running cluster, on real processes."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from tests_support import BACKEND

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own CLI"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def env():
    # A private session root keeps these clusters apart from everything else,
    # and short, so socket paths stay under the 108-byte limit.
    root = tempfile.mkdtemp(prefix="mt")
    e = {**os.environ, "MANTA_TMPDIR": root}
    e.pop("MANTA_TOKEN", None)
    e.pop("MANTA_ADDRESS", None)
    yield e
    subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=e, capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def manta(env, *args, check=True):
    out = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True,
                         text=True, timeout=90)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def _head(env, *extra):
    out = manta(env, "start", "--head", "--port", "0", *extra)
    address = out.stdout.split("started at ")[1].split()[0]
    token_file = out.stdout.split("token file: ")[1].split()[0]
    return address, token_file


def _pids(root):
    out = subprocess.run(["pgrep", "-f", root], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_head_join_status_driver_and_stop(env):
    address, token_file = _head(env, "--num-cpus", "2")
    assert address.startswith("127.0.0.1:")
    assert oct(os.stat(token_file).st_mode & 0o777) == "0o600"
    manta(env, "start", "--address", address, "--token-file", token_file, "--num-cpus", "1",
          "--resources", '{"beta": 2}')
    status = manta(env, "status").stdout
    assert status.count("alive") == 2 and "beta=2" in status
    assert "CPU: 0 / 3" in status

    driver = textwrap.dedent(
        f"""
        import manta
        manta.init(address="{address}")
        assert manta.cluster_resources()["CPU"] == 3
        assert len([n for n in manta.nodes() if n["Alive"]]) == 2

        @manta.remote(resources={{"beta": 1}})
        class OnBeta:
            def node(self):
                return manta.get_runtime_context().get_node_id()

        @manta.remote
        def double(x):
            return 2 * x

        beta_nodes = [n["NodeID"] for n in manta.nodes() if "beta" in n["Resources"]]
        assert manta.get(OnBeta.remote().node.remote()) == beta_nodes[0]
        assert manta.get([double.remote(i) for i in range(10)]) == [2 * i for i in range(10)]
        manta.shutdown()
        print("DRIVER OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=90)
    assert "DRIVER OK" in out.stdout, out.stdout + out.stderr
    # The driver left; the cluster did not.
    assert manta(env, "status").stdout.count("alive") == 2

    root = env["MANTA_TMPDIR"]
    assert _pids(root)
    out = manta(env, "stop", "--address", address)
    assert out.stdout.count("stopped") == 2
    assert _pids(root) == []
    assert os.listdir(root) == []


def test_wrong_token_is_refused_and_cluster_keeps_working(env, tmp_path):
    address, token_file = _head(env, "--num-cpus", "1")
    bad = tmp_path / "bad-token"
    bad.write_text("not the token")
    out = manta(env, "start", "--address", address, "--token-file", str(bad), check=False)
    assert out.returncode == 1
    assert "wrong cluster token" in out.stderr
    no_token = manta(env, "start", "--address", address, check=False)
    assert no_token.returncode == 2 and "token" in no_token.stderr
    status = manta(env, "status").stdout
    assert status.count("alive") == 1
    ok = subprocess.run(
        [sys.executable, "-c", "import manta; manta.init(address='auto');"
         "print(manta.get(manta.remote(lambda: 7).remote()))"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert ok.stdout.strip() == "7", ok.stderr


def test_a_driver_of_another_version_is_refused(env):
    _head(env, "--num-cpus", "1")
    out = subprocess.run(
        [sys.executable, "-c", "import manta; manta.__version__ = 'fake'; manta.init(address='auto')"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "RuntimeError: version mismatch" in out.stderr and "this driver runs manta fake" in out.stderr


def test_stop_leaves_other_clusters_alone(env):
    first, _ = _head(env, "--num-cpus", "1")
    second, _ = _head(env, "--num-cpus", "1")
    manta(env, "stop", "--address", first)
    status = manta(env, "status", "--address", second).stdout
    assert "alive" in status
    gone = manta(env, "status", "--address", first, check=False)
    assert gone.returncode == 1


def test_driver_without_a_cluster_gets_a_clear_error(env):
    out = subprocess.run(
        [sys.executable, "-c", "import manta; manta.init(address='auto')"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "no manta cluster is running on this machine" in out.stderr


def test_status_shows_pending_demands_and_the_driver_warns(env):
    address, _ = _head(env, "--num-cpus", "1")
    driver = textwrap.dedent(
        """
        import time, manta
        manta.init(address="auto")

        @manta.remote(resources={"unicorn": 1})
        def never():
            return 1

        ref = never.remote()
        ready, _ = manta.wait([ref], timeout=1.0)
        assert not ready
        print("READY", flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        status = manta(env, "status").stdout
        assert "unicorn=1" in status and "no node has these resources" in status
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert "no node in the cluster has" in err


def test_bad_storage_and_tunables_are_refused_before_anything_starts(env):
    bad = manta(env, "start", "--head", "--port", "0", "--storage", "foo://x", check=False)
    assert bad.returncode == 1 and "unknown storage 'foo://x'" in bad.stderr
    down = manta(env, "start", "--head", "--port", "0", "--storage", "redis://127.0.0.1:1", check=False)
    assert down.returncode == 1 and "cannot use the storage" in down.stderr
    wrong = manta(env, "start", "--head", "--port", "0", "--system-config", '{"memory_usage_threshold": 3}',
                  check=False)
    assert wrong.returncode == 2 and "memory_usage_threshold" in wrong.stderr
    assert _pids(env["MANTA_TMPDIR"]) == []  # nothing was left running


def test_ray_start_flags_labels_and_dashboard_options(env):
    # Ray's flags that scripts pass: labels are kept and shown; the dashboard
    # flags set the head's HTTP server; worker-port flags are accepted with a one-line notice.
    address, token_file = _head(env, "--num-cpus", "1", "--labels", "zone=a,peer_node=n1",
                                "--include-dashboard=True", "--dashboard-port", "0")
    out = manta(env, "start", "--address", address, "--token-file", token_file, "--num-cpus", "1",
                "--labels", '{"zone": "b"}', "--min-worker-port", "10002", "--max-worker-port", "10100")
    assert "nothing to do here" in out.stdout
    driver = textwrap.dedent(
        f"""
        import manta
        manta.init(address="{address}")
        print(sorted(n["Labels"].get("zone", "") for n in manta.nodes() if n["Alive"]))
        @manta.remote(num_cpus=1)
        def where():
            return manta.get_runtime_context().get_node_labels().get("zone")
        seen = set(manta.get([where.remote() for _ in range(8)]))
        print("labels seen by tasks:", bool(seen) and seen <= {{"a", "b"}})
        manta.shutdown()
        """
    )
    out = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=90)
    assert "['a', 'b']" in out.stdout and "labels seen by tasks: True" in out.stdout, out.stdout + out.stderr
    bad = manta(env, "start", "--head", "--port", "0", "--labels", "bad key!=x", check=False)
    assert bad.returncode == 2 and "--labels" in bad.stderr + bad.stdout


@contextlib.contextmanager
def _waiting_driver(env, body):
    """A driver that runs `body` on the cluster, prints a line (its words
    are yielded) and waits for a line on its stdin before it ends."""
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys, manta\nmanta.init(address='auto')\n" + textwrap.dedent(body)
         + "\nsys.stdin.readline()\n"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        yield driver.stdout.readline().split()
    finally:
        driver.stdin.write("\n")
        driver.stdin.flush()
        driver.wait(timeout=60)


def test_list_get_and_summary_of_the_cluster_state(env):
    import json

    address, _ = _head(env, "--num-cpus", "1")
    with _waiting_driver(env, """
        @manta.remote(num_cpus=0)
        class Listed:
            def ping(self):
                return 1

        a = Listed.options(name="listed").remote()
        manta.get(a.ping.remote())
        print("READY", flush=True)
    """) as said:
        assert said == ["READY"]
        actors = json.loads(manta(env, "list", "actors", "--filter", "name=listed", "--format", "json").stdout)
        assert [a["state"] for a in actors] == ["ALIVE"] and actors[0]["class_name"].endswith("Listed")
        table = manta(env, "list", "nodes").stdout
        assert "ALIVE" in table and "node_id" in table
        one = manta(env, "get", "actors", actors[0]["actor_id"]).stdout
        assert f"actor_id: \"{actors[0]['actor_id']}\"" in one
        assert json.loads(manta(env, "summary", "actors").stdout)["cluster"]["total_actors"] >= 1
        bad = manta(env, "list", "actors", "--filter", "nonsense", check=False)
        assert bad.returncode == 2 and "key=value" in bad.stderr
        missing = manta(env, "get", "actors", "00" * 16, check=False)
        assert missing.returncode == 1 and "no actor with id" in missing.stderr


def test_list_get_and_summary_of_workers_objects_runtime_envs_and_jobs(env):
    import json

    address, token_file = _head(env, "--num-cpus", "1")
    manta(env, "start", "--address", address, "--token-file", token_file, "--num-cpus", "1",
          "--resources", '{"beta": 1}')
    with _waiting_driver(env, """
        import os

        @manta.remote(num_cpus=0)
        class Env:
            def ping(self):
                return os.environ["CLI_STATE"]

        @manta.remote(resources={"beta": 1})
        def far():
            return manta.get_runtime_context().get_node_id(), b"y" * 300_000

        a = Env.options(runtime_env={"env_vars": {"CLI_STATE": "on"}}).remote()
        manta.get(a.ping.remote())
        kept = manta.put(b"x" * 1000)
        stored = far.remote()  # its value sits in the other node's store
        far_node = manta.get(stored)[0]
        ctx = manta.get_runtime_context()
        print("READY", ctx.get_job_id(), ctx.get_worker_id(), kept.hex(), os.getpid(), stored.hex(), far_node,
              flush=True)
    """) as (ready, job_id, worker_id, object_id, pid, stored_id, far_node):
        assert ready == "READY"
        nodes = {w["node_id"] for w in json.loads(manta(env, "list", "workers", "--format", "json").stdout)}
        assert far_node in nodes and len(nodes) == 2  # every node's agent answered
        stored = json.loads(manta(env, "get", "objects", stored_id, "--format", "json").stdout)
        assert [o["object_size"] >= 300_000 for o in stored] == [True]  # its size from the other node's store
        workers = json.loads(manta(env, "list", "workers", "--filter", "worker_type=DRIVER", "--format",
                                   "json").stdout)
        mine = [w for w in workers if w["pid"] == int(pid)]
        assert len(mine) == 1 and mine[0]["is_alive"] and mine[0]["worker_id"] == worker_id
        assert mine[0]["start_time_ms"] is None
        detailed = json.loads(manta(env, "list", "workers", "--detail", "--filter", f"worker_id={worker_id}",
                                    "--format", "json").stdout)
        assert detailed[0]["start_time_ms"] > 0
        assert f'worker_id: "{worker_id}"' in manta(env, "get", "workers", worker_id).stdout
        objects = json.loads(manta(env, "list", "objects", "--filter", f"pid={pid}", "--format", "json").stdout)
        assert object_id in {o["object_id"] for o in objects}
        one = manta(env, "get", "objects", object_id).stdout
        assert f'object_id: "{object_id}"' in one and 'reference_type: "LOCAL_REFERENCE"' in one
        summary = json.loads(manta(env, "summary", "objects").stdout)["cluster"]
        assert summary["summary"]["disabled"]["total_objects"] >= 1 and summary["callsite_enabled"] is False
        envs = json.loads(manta(env, "list", "runtime-envs", "--detail", "--format", "json").stdout)
        assert any(e["runtime_env"] == {"env_vars": {"CLI_STATE": "on"}} and e["ref_cnt"] >= 1 for e in envs)
        jobs = json.loads(manta(env, "list", "jobs", "--filter", "status=RUNNING", "--format", "json").stdout)
        assert job_id in {j["job_id"] for j in jobs}
        job = manta(env, "get", "jobs", job_id).stdout
        assert f'job_id: "{job_id}"' in job and 'status: "RUNNING"' in job
        assert "runtime-envs" not in manta(env, "get", "--help").stdout  # nothing to get one of by id
        bad = manta(env, "list", "workers", "--filter", "nonsense=1", check=False)
        assert bad.returncode == 2 and "nonsense" in bad.stderr
        missing = manta(env, "get", "workers", "00" * 16, check=False)
        assert missing.returncode == 1 and "no worker with id" in missing.stderr
