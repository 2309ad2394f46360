"""Runtime: init/shutdown/is_initialized, auto-init, runtime_env, runtime
context, cluster/available resources, nodes, and worker output forwarding.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import os
import re
import string

import pytest

pytestmark = pytest.mark.timeout(60)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _is_hex(s):
    return isinstance(s, str) and len(s) > 0 and set(s) <= set(string.hexdigits)


def test_only_the_packages_own_modules_are_reachable_from_it(ray):
    import inspect

    leaked = [name for name, mod in inspect.getmembers(ray, inspect.ismodule)
              if mod.__name__ != ray.__name__ and not mod.__name__.startswith(ray.__name__ + ".")]
    assert not leaked, f"modules of other packages reachable as {ray.__name__}.X: {leaked}"


# --------------------------------------------------------------------------
# init / shutdown (each test manages its own cluster)
# --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_init_shutdown_is_initialized_and_reinit_error(ray_clean):
    ray = ray_clean
    assert ray.is_initialized() is False
    ray.init(num_cpus=1)
    try:
        assert ray.is_initialized() is True
        with pytest.raises(RuntimeError):
            ray.init(num_cpus=1)
        # Allowed with ignore_reinit_error, and the cluster keeps working.
        ray.init(num_cpus=1, ignore_reinit_error=True)
        assert ray.is_initialized() is True
        assert ray.get(ray.put("still-works")) == "still-works"
    finally:
        ray.shutdown()
    assert ray.is_initialized() is False
    ray.shutdown()  # a second shutdown is harmless
    assert ray.is_initialized() is False


@pytest.mark.timeout(90)
def test_init_accepts_documented_arguments(ray_clean):
    ray = ray_clean

    @ray.remote
    def probe(name):
        ctx = ray.get_runtime_context()
        return os.environ.get(name), ctx.namespace

    @ray.remote
    class EnvActor:
        def read(self, name):
            return os.environ.get(name)

    ray.init(
        address=None,
        num_cpus=2,
        num_gpus=0,
        resources={"widget": 3},
        object_store_memory=200 * 1024 * 1024,
        namespace="init_ns",
        runtime_env={"env_vars": {"MANTA_TEST_INIT_VAR": "from-init"}},
    )
    try:
        resources = ray.cluster_resources()
        assert resources["CPU"] == 2
        assert resources["widget"] == 3
        assert resources.get("GPU", 0) == 0
        assert ray.get_runtime_context().namespace == "init_ns"
        # runtime_env env_vars reach tasks and actors.
        assert ray.get(probe.remote("MANTA_TEST_INIT_VAR")) == ("from-init", "init_ns")
        actor = EnvActor.remote()
        assert ray.get(actor.read.remote("MANTA_TEST_INIT_VAR")) == "from-init"
        # A per-task runtime_env wins over the job's for the same variable.
        override = {"env_vars": {"MANTA_TEST_INIT_VAR": "overridden"}}
        assert ray.get(probe.options(runtime_env=override).remote("MANTA_TEST_INIT_VAR"))[0] == "overridden"

        # Tasks started by a task inherit its environment.
        @ray.remote
        def outer(name):
            return ray.get(probe.remote(name))[0]

        assert ray.get(outer.remote("MANTA_TEST_INIT_VAR")) == "from-init"
        assert ray.get(outer.options(runtime_env=override).remote("MANTA_TEST_INIT_VAR")) == "overridden"
    finally:
        ray.shutdown()


@pytest.mark.timeout(90)
def test_remote_call_auto_initializes(ray_clean):
    ray = ray_clean

    @ray.remote
    def f():
        return "auto"

    assert ray.is_initialized() is False
    try:
        ref = f.remote()
        assert ray.is_initialized() is True
        assert ray.get(ref) == "auto"
    finally:
        ray.shutdown()
    assert ray.is_initialized() is False


@pytest.mark.timeout(90)
def test_put_auto_initializes(ray_clean):
    ray = ray_clean
    assert ray.is_initialized() is False
    try:
        ref = ray.put(123)
        assert ray.is_initialized() is True
        assert ray.get(ref) == 123
    finally:
        ray.shutdown()


@pytest.mark.timeout(90)
def test_print_in_task_and_actor_reaches_driver_stdout(ray, run_driver, wait_for):
    """Worker prints show up on the driver's stdout, prefixed like
    ``(hello_task pid=123) text``."""
    driver = run_driver(
        """
import importlib, sys
ray = importlib.import_module("{backend}")
ray.init(num_cpus=1)

@ray.remote
def hello_task():
    print("marker-from-task-5731")
    return 1

@ray.remote
class Greeter:
    def hi(self):
        print("marker-from-actor-9012")
        return 2

g = Greeter.remote()
assert ray.get([hello_task.remote(), g.hi.remote()]) == [1, 2]
print("DRIVER-READY", flush=True)
sys.stdin.readline()  # the test says when it has seen the output
ray.shutdown()
print("DRIVER-DONE", flush=True)
"""
    )

    def lines_with(marker):
        out = _ANSI.sub("", driver.stdout())
        return [line for line in out.splitlines() if marker in line]

    try:
        wait_for(
            lambda: lines_with("marker-from-task-5731") and lines_with("marker-from-actor-9012"),
            timeout=60,
            message=f"worker output on the driver's stdout; stdout={driver.stdout()[-2000:]!r} stderr={driver.stderr()[-2000:]!r}",
        )
    finally:
        driver.send("\n")
        rc = driver.wait(timeout=60)
    assert rc == 0, driver.stderr()[-3000:]
    assert "DRIVER-DONE" in driver.stdout()

    task_line = lines_with("marker-from-task-5731")[0]
    actor_line = lines_with("marker-from-actor-9012")[0]
    assert re.search(r"\(hello_task pid=\d+", task_line), task_line
    assert re.search(r"\(Greeter pid=\d+", actor_line), actor_line
    # The task's line is not the driver's own print.
    assert task_line.index("pid=") < task_line.index("marker-from-task-5731")


@pytest.mark.timeout(120)
def test_workers_import_from_the_script_directory_only_where_the_driver_does(ray, backend_name, tmp_path):
    """As in Ray: `python script.py` puts the script's directory on the
    workers' sys.path; `python -m pkg.module` does not (nor does the driver's)."""
    import subprocess
    import sys

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(
        f"import sys, {backend_name} as ray\n"
        "ray.init(num_cpus=1)\n"
        "print('IN' if ray.get(ray.remote(lambda: sys.path).remote()).count(%r) else 'OUT')\n"
        "ray.shutdown()\n" % str(pkg)
    )
    env = dict(os.environ, MANTA_TEST_BACKEND=backend_name)
    env.pop("PYTHONSAFEPATH", None)
    as_script = subprocess.run([sys.executable, str(pkg / "main.py")], env=env, capture_output=True,
                               text=True, timeout=100)
    as_module = subprocess.run([sys.executable, "-m", "pkg.main"], env=env, capture_output=True,
                               text=True, timeout=100, cwd=str(tmp_path))
    assert as_script.stdout.split()[-1:] == ["IN"], as_script.stderr[-2000:]
    assert as_module.stdout.split()[-1:] == ["OUT"], as_module.stderr[-2000:]


# --------------------------------------------------------------------------
# runtime context (shared cluster: 4 CPUs, custom=2, namespace "test")
# --------------------------------------------------------------------------


def test_runtime_context_in_driver(ray_start):
    ray = ray_start
    ctx = ray.get_runtime_context()
    assert _is_hex(ctx.get_job_id())
    assert _is_hex(ctx.get_node_id())
    assert ctx.namespace == "test"
    assert ctx.get_actor_id() is None


def test_runtime_context_in_task(ray_start):
    ray = ray_start

    @ray.remote
    def describe():
        ctx = ray.get_runtime_context()
        return {
            "job": ctx.get_job_id(),
            "task": ctx.get_task_id(),
            "actor": ctx.get_actor_id(),
            "node": ctx.get_node_id(),
            "namespace": ctx.namespace,
        }

    first, second = ray.get([describe.remote(), describe.remote()])
    driver = ray.get_runtime_context()
    for info in (first, second):
        assert info["job"] == driver.get_job_id()
        assert info["node"] == driver.get_node_id()  # one-node cluster
        assert info["namespace"] == "test"
        assert info["actor"] is None
        assert _is_hex(info["task"])
    assert first["task"] != second["task"]


def test_runtime_context_in_actor(ray_start):
    ray = ray_start

    @ray.remote
    class Describer:
        def describe(self):
            ctx = ray.get_runtime_context()
            return ctx.get_actor_id(), ctx.get_task_id(), ctx.get_job_id(), ctx.get_node_id()

    a = Describer.remote()
    b = Describer.remote()
    (a_id, a_task1, job, node), (a_id2, a_task2, _, _) = ray.get([a.describe.remote(), a.describe.remote()])
    b_id = ray.get(b.describe.remote())[0]
    assert _is_hex(a_id)
    assert a_id == a_id2
    assert a_id != b_id
    assert a_id == a._actor_id.hex()
    assert b_id == b._actor_id.hex()
    assert _is_hex(a_task1) and a_task1 != a_task2
    assert job == ray.get_runtime_context().get_job_id()
    assert node == ray.get_runtime_context().get_node_id()


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, {"CPU": 1.0}),
        ({"num_cpus": 1}, {"CPU": 1.0}),
        ({"num_cpus": 2}, {"CPU": 2.0}),
        ({"num_cpus": 0, "resources": {"custom": 1}}, {"custom": 1.0}),
        ({"num_cpus": 1, "resources": {"custom": 2}}, {"CPU": 1.0, "custom": 2.0}),
    ],
    ids=["default", "cpu1", "cpu2", "custom_only", "cpu_and_custom"],
)
def test_get_assigned_resources_in_task(ray_start, options, expected):
    ray = ray_start

    @ray.remote
    def assigned():
        return ray.get_runtime_context().get_assigned_resources()

    got = ray.get(assigned.options(**options).remote())
    assert {k: float(v) for k, v in got.items()} == expected


def test_get_assigned_resources_in_actor(ray_start):
    ray = ray_start

    @ray.remote(num_cpus=1)
    class Holder:
        def assigned(self):
            return ray.get_runtime_context().get_assigned_resources()

    h = Holder.remote()
    got = ray.get(h.assigned.remote())
    assert {k: float(v) for k, v in got.items()} == {"CPU": 1.0}
    ray.kill(h)


# --------------------------------------------------------------------------
# resources and nodes
# --------------------------------------------------------------------------


def test_cluster_resources_reflect_init_arguments(ray_start):
    ray = ray_start
    total = ray.cluster_resources()
    assert total["CPU"] == 4
    assert total["custom"] == 2
    assert total.get("GPU", 0) == 0


def _idle(ray):
    avail = ray.available_resources()
    return avail.get("CPU") == 4 and avail.get("custom") == 2


def test_available_resources_drop_while_task_runs(ray_start, gate_helpers, tmp_path, wait_for):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")
    wait_for(lambda: _idle(ray), timeout=30, message="an idle cluster")

    @ray.remote(num_cpus=1, resources={"custom": 1})
    def holder():
        block_until(gate)
        return "released"

    ref = holder.remote()
    try:
        wait_for(
            lambda: ray.available_resources().get("CPU") == 3 and ray.available_resources().get("custom") == 1,
            timeout=30,
            message="CPU 3 / custom 1 available while the task runs",
        )
        assert ray.cluster_resources()["CPU"] == 4  # totals do not change
    finally:
        touch(gate)
    assert ray.get(ref, timeout=30) == "released"
    wait_for(lambda: _idle(ray), timeout=30, message="resources to come back")


def test_fully_used_resource_is_absent_or_zero_in_available(ray_start, gate_helpers, tmp_path, wait_for):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")
    wait_for(lambda: _idle(ray), timeout=30, message="an idle cluster")

    @ray.remote(num_cpus=0, resources={"custom": 2})
    def holder():
        block_until(gate)
        return True

    ref = holder.remote()
    try:
        wait_for(
            lambda: ray.available_resources().get("custom", 0) == 0,
            timeout=30,
            message="custom fully used",
        )
    finally:
        touch(gate)
    assert ray.get(ref, timeout=30) is True
    wait_for(lambda: _idle(ray), timeout=30, message="resources to come back")


def test_actor_with_num_cpus_holds_cpu_until_killed(ray_start, wait_for):
    ray = ray_start
    wait_for(lambda: _idle(ray), timeout=30, message="an idle cluster")

    @ray.remote(num_cpus=1)
    class Sitter:
        def ready(self):
            return True

    s = Sitter.remote()
    assert ray.get(s.ready.remote())
    wait_for(lambda: ray.available_resources().get("CPU") == 3, timeout=30, message="CPU held by actor")
    ray.kill(s)
    wait_for(lambda: ray.available_resources().get("CPU") == 4, timeout=30, message="CPU released by kill")


def test_nodes_lists_one_alive_node(ray_start):
    ray = ray_start
    nodes = ray.nodes()
    assert isinstance(nodes, list) and len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["NodeID"] == ray.get_runtime_context().get_node_id()
    assert node["Resources"]["CPU"] == 4
    assert node["Resources"]["custom"] == 2
