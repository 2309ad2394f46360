"""Concurrency groups and the order of actor calls, as in Ray: each group
runs apart (a group whose calls block holds up no other), calls name their
group by @method or .options(), threaded and async actors take calls out
of order, and a one-at-a-time actor keeps each caller's order.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import threading

import pytest

pytestmark = pytest.mark.timeout(120)


def test_a_blocked_group_holds_up_neither_the_default_nor_another_group(ray_start, tmp_path, gate_helpers):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote(concurrency_groups={"io": 1, "compute": 2})
    class Worker:
        @ray.method(concurrency_group="io")
        def hold(self, path):
            block_until(path)
            return threading.get_ident()

        @ray.method(concurrency_group="compute")
        def compute(self):
            return threading.get_ident()

        def default(self):
            return threading.get_ident()

    w = Worker.remote()
    held = w.hold.remote(gate)
    compute_thread = ray.get(w.compute.remote(), timeout=30)
    default_thread = ray.get(w.default.remote(), timeout=30)
    assert compute_thread != default_thread
    # A call may name another group than its method's.
    assert ray.get(w.default.options(concurrency_group="compute").remote(), timeout=30) != default_thread
    # The io group's one thread is busy: another io call waits for it.
    queued = w.default.options(concurrency_group="io").remote()
    ready, _ = ray.wait([queued], timeout=1)
    assert not ready
    touch(gate)
    assert ray.get(held) == ray.get(queued)


def test_an_async_actor_group_that_blocks_its_loop_holds_up_no_other_group(ray_start, tmp_path, gate_helpers):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote(concurrency_groups={"slow": 1, "fast": 1})
    class Async:
        @ray.method(concurrency_group="slow")
        async def hold(self, path):
            block_until(path)  # blocks this group's event loop
            return "held"

        @ray.method(concurrency_group="fast")
        async def ping(self):
            return "pong"

        async def default(self):
            return "default"

    a = Async.remote()
    held = a.hold.remote(gate)
    assert ray.get(a.ping.remote(), timeout=30) == "pong"
    assert ray.get(a.default.remote(), timeout=30) == "default"
    touch(gate)
    assert ray.get(held) == "held"


@pytest.fixture
def late(ray_start, tmp_path, gate_helpers):
    """(a task returning "first" once the gate opens, the gate, open it)."""
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray_start.remote
    def late(path):
        block_until(path)
        return "first"

    return late, gate, lambda: touch(gate)


def test_threaded_and_async_actors_take_calls_out_of_order(ray_start, late):
    ray = ray_start
    late, gate, open_gate = late

    @ray.remote
    class Threaded:
        def echo(self, x):
            return x

    @ray.remote
    class Async:
        async def echo(self, x):
            return x

    for actor in (Threaded.options(max_concurrency=2).remote(), Async.remote()):
        waiting = actor.echo.remote(late.remote(gate))
        # The later call, with its argument ready, does not wait behind it.
        assert ray.get(actor.echo.remote(2), timeout=30) == 2
        ready, _ = ray.wait([waiting], timeout=0.5)
        assert not ready
    open_gate()


def test_a_one_at_a_time_actor_keeps_its_callers_order(ray_start, late):
    ray = ray_start
    late, gate, open_gate = late

    @ray.remote
    class Log:
        def __init__(self):
            self.seen = []

        def add(self, x):
            self.seen.append(x)
            return list(self.seen)

    log = Log.remote()
    first = log.add.remote(late.remote(gate))
    second = log.add.remote("second")
    ready, _ = ray.wait([second], timeout=1)
    assert not ready  # held behind the call whose argument is not ready
    open_gate()
    assert ray.get(second) == ["first", "second"] and ray.get(first) == ["first"]


def test_in_order_execution_cannot_be_asked_of_a_concurrent_actor(ray_start):
    ray = ray_start

    @ray.remote
    class Async:
        async def f(self):
            pass

    class Plain:
        pass

    with pytest.raises(ValueError):
        Async.options(allow_out_of_order_execution=False).remote()
    with pytest.raises(ValueError):
        ray.remote(max_concurrency=2, allow_out_of_order_execution=False)(Plain).remote()
