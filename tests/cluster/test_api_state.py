"""The task state API (list_tasks, get_task), cancellation checks
(is_canceled) and the runtime context's names and ids, as Ray has them.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import importlib
import warnings

import pytest

pytestmark = pytest.mark.timeout(120)


def _state(ray):
    return importlib.import_module(f"{ray.__name__}.util.state")


def _one(state, **filters):
    found = state.list_tasks(filters=[(k, "=", v) for k, v in filters.items()])
    return found[0] if len(found) == 1 else None


def test_list_tasks_shows_running_then_finished_failed_and_actor_calls(ray_start, tmp_path, wait_for, gate_helpers):
    ray = ray_start
    state = _state(ray)
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    def held(path):
        block_until(path)
        return 1

    @ray.remote
    def broken():
        raise ValueError("no")

    @ray.remote
    class Counter:
        def wait(self, path):
            block_until(path)
            return 2

    ref = held.remote(gate)
    task_id = ref.task_id().hex()
    c = Counter.remote()
    call = c.wait.remote(gate)
    bad = broken.remote()
    running = wait_for(lambda: (t := _one(state, task_id=task_id)) and t.state == "RUNNING" and t)
    assert running["name"] == "held" and running.func_or_class_name == "held"
    assert running.type == "NORMAL_TASK" and running.attempt_number == 0
    assert running.job_id == ray.get_runtime_context().get_job_id()
    assert running.node_id == ray.get_runtime_context().get_node_id()
    assert running.worker_pid > 0
    wait_for(lambda: (t := _one(state, name="Counter.wait")) and t.state == "RUNNING")
    actor_call = _one(state, name="Counter.wait")
    assert actor_call.type == "ACTOR_TASK" and actor_call.actor_id == c._actor_id.hex()
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(bad)
    failed = wait_for(lambda: (t := _one(state, name="broken")) and t.state == "FAILED" and t)
    assert failed.error_type == "TASK_EXECUTION_EXCEPTION"
    touch(gate)
    assert ray.get([ref, call]) == [1, 2]
    wait_for(lambda: _one(state, task_id=task_id).state == "FINISHED")
    wait_for(lambda: _one(state, name="Counter.wait").state == "FINISHED")
    assert state.get_task(task_id).task_id == task_id
    # Filters: "!=", keys and values without regard to case.
    assert all(t.name != "held" for t in state.list_tasks(filters=[("NAME", "!=", "held")]))
    assert any(t.task_id == task_id for t in state.list_tasks(filters=[("state", "=", "finished")], limit=10_000))
    assert len(state.list_tasks(limit=1)) == 1


def test_list_tasks_refuses_an_unknown_field(ray_start):
    state = _state(ray_start)
    with pytest.raises(Exception, match="not_a_field"):
        state.list_tasks(filters=[("not_a_field", "=", "x")])


def test_calls_queued_behind_a_busy_actor_wait_for_ordering(ray_start, wait_for, tmp_path, gate_helpers):
    ray = ray_start
    state = _state(ray)
    _, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    class Busy:
        async def hold(self, path):
            import asyncio
            import os as _os

            while not _os.path.exists(path):
                await asyncio.sleep(0.02)

        async def later(self):
            return 1

    b = Busy.options(max_concurrency=1).remote()
    ray.get(b.__ray_ready__.remote())
    first = b.hold.remote(gate)
    later = [b.later.remote() for _ in range(5)]
    queued = "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"
    wait_for(lambda: len(state.list_tasks(filters=[("name", "=", "Busy.later"), ("state", "=", queued)])) == 5)
    touch(gate)
    ray.get(first)
    assert ray.get(later) == [1] * 5


def test_is_canceled_in_a_sync_actor_call_and_its_caller_gets_cancelled(ray_start, wait_for, tmp_path, gate_helpers):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    class A:
        def __init__(self):
            # The same name as a method: calls still reach the method.
            self.saw = False

        def work(self, path):
            # Runs on until it sees its cancel (or the gate opens).
            import os as _os
            import time as _time

            ctx = ray.get_runtime_context()
            while not ctx.is_canceled() and not _os.path.exists(path):
                _time.sleep(0.02)
            self.saw = ctx.is_canceled()
            return "done"

        def started(self):
            return True

        def saw(self):
            return self.saw

    a = A.remote()
    ref = a.work.remote(gate)
    # Not interrupted: it runs on and checks.
    wait_for(lambda: _one(_state(ray), task_id=ref.task_id().hex()) is not None
             and _one(_state(ray), task_id=ref.task_id().hex()).state == "RUNNING")
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(a.saw.remote()) is True
    pending = a.work.remote(gate)  # runs until the gate opens
    with pytest.raises(ValueError, match="force=True is not supported"):
        ray.cancel(pending, force=True)
    touch(gate)
    assert ray.get(pending, timeout=30) == "done"


def test_a_task_that_catches_the_interrupt_of_its_cancel_returns_its_value(ray_start, tmp_path, wait_for):
    ray = ray_start
    started = tmp_path / "started"

    @ray.remote
    def patient(path):
        import time as _time

        open(path, "w").close()
        try:
            for _ in range(600):  # Ray interrupts between bytecodes, not in sleep()
                _time.sleep(0.1)
        except KeyboardInterrupt:
            if ray.get_runtime_context().is_canceled():
                return "cancelled, and said so"
        return "slept"

    ref = patient.remote(str(started))
    wait_for(started.exists)
    ray.cancel(ref)
    assert ray.get(ref, timeout=30) == "cancelled, and said so"


def test_is_canceled_is_refused_in_an_async_actor(ray_start):
    ray = ray_start

    @ray.remote
    class Async:
        async def check(self):
            return ray.get_runtime_context().is_canceled()

    with pytest.raises(RuntimeError, match="not supported in an async actor"):
        ray.get(Async.remote().check.remote())


def test_runtime_context_names_the_task_the_actor_and_the_session(ray_start):
    ray = ray_start
    ctx = ray.get_runtime_context()
    assert "task_id" not in ctx.get() and "actor_id" not in ctx.get()
    assert ctx.get_actor_name() is None and ctx.get_task_name() is None
    session = ctx.get_session_name()
    assert session
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert ctx.node_id.hex() == ctx.get_node_id()
    assert any("get_node_id()" in str(x.message) for x in w)

    @ray.remote
    def task():
        c = ray.get_runtime_context()
        return c.get_task_name(), c.get_session_name(), "task_id" in c.get(), "actor_id" in c.get()

    assert ray.get(task.options(name="renamed").remote()) == ("renamed", session, True, False)

    @ray.remote
    class Named:
        def names(self):
            c = ray.get_runtime_context()
            return c.get_actor_name(), c.get_task_name(), c.get_task_function_name(), "actor_id" in c.get()

    name, task_name, function, has_actor = ray.get(Named.options(name="the_one").remote().names.remote())
    assert (name, task_name, has_actor) == ("the_one", "Named.names", True)
    assert function.endswith(".Named.names")
    assert ray.get(Named.remote().names.remote())[0] == ""


def test_placement_group_id_inside_a_bundle(ray_start):
    ray = ray_start
    util = importlib.import_module(f"{ray.__name__}.util")
    strategies = importlib.import_module(f"{ray.__name__}.util.scheduling_strategies")
    assert ray.get_runtime_context().get_placement_group_id() is None
    pg = util.placement_group([{"CPU": 1}])
    ray.get(pg.ready())

    @ray.remote
    def where():
        return ray.get_runtime_context().get_placement_group_id()

    try:
        strategy = strategies.PlacementGroupSchedulingStrategy(placement_group=pg)
        assert ray.get(where.options(scheduling_strategy=strategy).remote()) == pg.id.hex()
        assert ray.get(where.remote()) is None
    finally:
        util.remove_placement_group(pg)


def test_every_node_carries_its_id_label_and_actors_go_where_labels_match(ray_start):
    ray = ray_start
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    assert ctx.get_node_labels()["ray.io/node-id"] == node_id
    assert any(n["Labels"].get("ray.io/node-id") == node_id for n in ray.nodes())

    @ray.remote
    class Where:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    here = Where.options(label_selector={"ray.io/node-id": node_id}).remote()
    assert ray.get(here.node.remote(), timeout=30) == node_id
    nowhere = Where.options(label_selector={"ray.io/node-id": "!" + node_id}).remote()
    ready, _ = ray.wait([nowhere.node.remote()], timeout=2)
    assert not ready  # no node matches: it waits for one
    ray.kill(nowhere)


def test_nodes_placement_groups_and_summaries_with_rays_fields(ray_start, wait_for):
    ray = ray_start
    state = _state(ray)
    util = importlib.import_module(f"{ray.__name__}.util")
    nodes = state.list_nodes()
    assert len(nodes) == 1 and nodes[0].state == "ALIVE" and nodes[0].is_head_node
    assert nodes[0].resources_total["CPU"] == 4
    assert state.get_node(nodes[0].node_id).node_id == nodes[0].node_id
    pg = util.placement_group([{"CPU": 1}], name="listed")
    ray.get(pg.ready(), timeout=30)
    group = state.get_placement_group(pg.id.hex())
    assert group.name == "listed" and group.state == "CREATED"
    assert group.bundles[0]["unit_resources"] == {"CPU": 1.0}
    assert group.bundles[0]["node_id"] == nodes[0].node_id
    assert [g.placement_group_id for g in state.list_placement_groups(filters=[("name", "=", "listed")])] == [
        pg.id.hex()]
    util.remove_placement_group(pg)

    @ray.remote
    def summed():
        return 1

    @ray.remote
    class Summed:
        def call(self):
            return 1

    s = Summed.remote()
    ray.get([summed.remote() for _ in range(3)] + [s.call.remote()])

    def counted():
        tasks = state.summarize_tasks()["cluster"]["summary"]
        return tasks.get("summed", {}).get("state_counts", {}).get("FINISHED") == 3 and \
            tasks.get("Summed.call", {}).get("state_counts", {}).get("FINISHED") == 1

    wait_for(counted, timeout=30, message="the task summary")
    tasks = state.summarize_tasks()["cluster"]
    assert tasks["summary"]["summed"]["type"] == "NORMAL_TASK" and tasks["summary_by"] == "func_name"
    actors = state.summarize_actors()["cluster"]
    mine = next(v for k, v in actors["summary"].items() if k.endswith("Summed"))  # its qualified name
    assert mine["state_counts"].get("ALIVE") == 1 and actors["total_actors"] >= 1
