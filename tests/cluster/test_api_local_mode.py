"""init(local_mode=True): every task and actor in the driver, one at a time.

Beyond Ray (which dropped local mode), so manta only. Each test starts its
own local-mode session (no processes) and ends it.
"""

import asyncio
import os
import sys
import threading

import pytest
from tests_support import BACKEND

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="local_mode is manta's (Ray dropped it)"),
    pytest.mark.timeout(60),
]


@pytest.fixture
def local(ray_clean):
    ray = ray_clean
    ray.init(local_mode=True, namespace="lm")
    yield ray
    ray.shutdown()


@pytest.fixture
def journal(tmp_path):
    """(write, read): an append-only log that tasks write to as they run
    (tasks get copies of what they capture, so a list would not do)."""
    path = str(tmp_path / "journal")

    def write(line):
        with open(path, "a") as f:
            f.write(f"{line}\n")

    def read():
        try:
            with open(path) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    return write, read


# --------------------------------------------------------------------------
# where and when tasks run
# --------------------------------------------------------------------------


def test_tasks_run_in_the_driver_process_and_thread(local):
    ray = local

    @ray.remote
    def where():
        ctx = ray.get_runtime_context()
        return os.getpid(), threading.get_ident(), ctx.get_task_id(), ctx.get_task_name()

    pid, thread, task_id, name = ray.get(where.remote())
    assert (pid, thread) == (os.getpid(), threading.get_ident())
    assert task_id is not None and name == "where"
    assert ray.get_runtime_context().get_task_id() is None  # the driver's own code


def test_tasks_run_serially_at_remote_in_call_order(local, journal):
    ray = local
    write, read = journal

    @ray.remote
    def inner(i):
        write(f"inner{i}")
        return i

    @ray.remote
    def outer(i):
        write(f"start{i}")
        ref = inner.remote(i)
        write(f"end{i}")
        return ray.get(ref)

    refs = [outer.remote(i) for i in range(2)]
    # Run by .remote(), before any get, each to its end before the next.
    assert read() == ["start0", "inner0", "end0", "start1", "inner1", "end1"]
    assert ray.get(refs) == [0, 1]


def test_a_tracer_sees_task_code_run(local):
    # What coverage and debuggers rely on: the task's frames run under the
    # driver's trace function.
    ray = local

    @ray.remote
    def traced_task(x):
        return x + 1

    seen = []

    def tracer(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_name)
        return None

    sys.settrace(tracer)
    try:
        ref = traced_task.remote(1)
    finally:
        sys.settrace(None)
    assert "traced_task" in seen
    assert ray.get(ref) == 2


def test_values_are_copies_as_in_a_worker(local):
    ray = local
    data = {"k": [1]}

    @ray.remote
    def mutate(d):
        d["k"].append(2)
        return d

    out = ray.get(mutate.remote(data))
    assert out == {"k": [1, 2]} and data == {"k": [1]}
    ref = ray.put(data)
    assert ray.get(ref) == data and ray.get(ref) is not data


# --------------------------------------------------------------------------
# errors, as in cluster mode
# --------------------------------------------------------------------------


def test_a_task_error_is_raised_from_get_with_its_type(local, journal):
    ray = local
    write, read = journal

    class Oops(Exception):
        def __init__(self, msg, code=0):
            super().__init__(msg, code)  # args that rebuild it, as pickling needs
            self.code = code

    @ray.remote
    def fails():
        raise Oops("broken", 7)

    @ray.remote
    def after(x):
        write("after ran")
        return x

    ref = fails.remote()
    with pytest.raises(Oops) as info:
        ray.get(ref)
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert info.value.cause.code == 7 and "broken" in str(info.value)
    # A failed ref argument fails the next task with the same error, unrun.
    with pytest.raises(Oops):
        ray.get(after.remote(ref))
    assert read() == []


def test_a_nested_task_error_keeps_its_type(local):
    ray = local

    @ray.remote
    def inner():
        raise KeyError("missing")

    @ray.remote
    def outer():
        return ray.get(inner.remote())

    with pytest.raises(KeyError):
        ray.get(outer.remote())


def test_the_error_from_get_carries_the_failing_frame(local):
    # So pdb.post_mortem() (and pdb.pm()) land in the task's own code.
    ray = local

    @ray.remote
    def divide(a, b):
        return a / b

    with pytest.raises(ZeroDivisionError) as info:
        ray.get(divide.remote(1, 0))
    tb = info.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "divide"
    assert tb.tb_frame.f_locals == {"a": 1, "b": 0}


def test_api_argument_errors_are_the_clusters(local):
    ray = local
    ref = ray.put(1)
    with pytest.raises(TypeError):
        ray.get(1)
    with pytest.raises(ValueError):
        ray.get(ref, timeout=-1)
    with pytest.raises(TypeError):
        ray.put(ref)
    with pytest.raises(ValueError):
        ray.wait([ref, ref])
    with pytest.raises(ValueError):
        ray.wait([ref], num_returns=2)
    with pytest.raises(TypeError):
        ray.wait(ref)

    @ray.remote
    def f(x):
        return x

    with pytest.raises(TypeError):
        f.remote()  # missing argument: refused at .remote(), as in the cluster
    with pytest.raises(ray.exceptions.RaySerializationError):
        f.remote(threading.Lock())


def test_retry_exceptions_runs_the_task_again(local, journal):
    ray = local
    write, read = journal

    @ray.remote(max_retries=2, retry_exceptions=[ValueError])
    def flaky():
        write("try")
        if len(read()) < 2:
            raise ValueError("not yet")
        return "done"

    assert ray.get(flaky.remote()) == "done"
    assert read() == ["try", "try"]


def test_sys_exit_in_a_task_is_a_worker_crash_not_the_drivers_exit(local):
    ray = local

    @ray.remote(max_retries=0)
    def leave():
        sys.exit(3)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(leave.remote())


# --------------------------------------------------------------------------
# objects and returns
# --------------------------------------------------------------------------


def test_num_returns_wait_and_futures(local):
    ray = local

    @ray.remote(num_returns=2)
    def pair():
        return 1, 2

    @ray.remote(num_returns=0)
    def nothing():
        return None

    @ray.remote(num_returns=3)
    def short():
        return 1, 2

    a, b = pair.remote()
    assert ray.get([a, b]) == [1, 2]
    assert nothing.remote() is None
    with pytest.raises(ValueError):
        ray.get(short.remote()[0])
    ready, not_ready = ray.wait([a, b], num_returns=1)
    assert ready == [a] and not_ready == [b]
    assert a.future().result() == 1
    assert asyncio.run(_await(b)) == 2
    ray.cancel(a)  # finished: nothing to cancel
    assert ray.get(a) == 1


async def _await(ref):
    return await ref


# --------------------------------------------------------------------------
# actors
# --------------------------------------------------------------------------


def test_actor_state_calls_and_context(local):
    ray = local

    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def add(self, k):
            self.n += k
            return self.n

        def where(self):
            ctx = ray.get_runtime_context()
            return os.getpid(), ctx.get_actor_id(), ctx.current_actor

    c = Counter.remote(10)
    assert ray.get([c.add.remote(1), c.add.remote(2)]) == [11, 13]
    pid, actor_id, me = ray.get(c.where.remote())
    assert pid == os.getpid() and actor_id == c._actor_id.hex()
    assert ray.get(me.add.remote(0)) == 13
    assert ray.get_runtime_context().get_actor_id() is None

    @ray.remote
    def use(handle):
        return ray.get(handle.add.remote(5))

    assert ray.get(use.remote(c)) == 18


def test_named_actors_and_namespaces(local):
    ray = local

    @ray.remote
    class Box:
        def get(self):
            return "box"

    keep = Box.options(name="box").remote()
    assert ray.get(ray.get_actor("box").get.remote()) == "box"
    assert ray.get_actor("box", namespace="lm")._actor_id == keep._actor_id
    with pytest.raises(ValueError):
        Box.options(name="box").remote()
    same = Box.options(name="box", get_if_exists=True).remote()
    assert same._actor_id == keep._actor_id
    with pytest.raises(ValueError):
        ray.get_actor("box", namespace="elsewhere")
    assert ray.util.list_named_actors() == ["box"]
    ray.kill(keep)
    with pytest.raises(ValueError):
        ray.get_actor("box")


def test_actor_deaths_are_the_clusters(local):
    ray = local

    @ray.remote
    class Fragile:
        def __init__(self, fail):
            if fail:
                raise RuntimeError("no luck")

        def ping(self):
            return "pong"

        def leave(self):
            ray.actor.exit_actor()

    broken = Fragile.remote(True)
    with pytest.raises(ray.exceptions.ActorDiedError, match="no luck"):
        ray.get(broken.ping.remote())
    leaving = Fragile.remote(False)
    with pytest.raises(ray.exceptions.ActorDiedError, match="exit_actor"):
        ray.get(leaving.leave.remote())
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(leaving.ping.remote())
    killed = Fragile.remote(False)
    ray.kill(killed)
    with pytest.raises(ray.exceptions.ActorDiedError, match="ray.kill"):
        ray.get(killed.ping.remote())


def test_a_killed_actor_restarts_within_max_restarts(local):
    ray = local

    @ray.remote(max_restarts=1)
    class Phoenix:
        def __init__(self):
            self.n = 0

        def bump(self):
            self.n += 1
            return self.n, ray.get_runtime_context().was_current_actor_reconstructed

    p = Phoenix.remote()
    assert ray.get(p.bump.remote()) == (1, False)
    ray.kill(p, no_restart=False)
    assert ray.get(p.bump.remote()) == (1, True)  # a new instance
    ray.kill(p, no_restart=False)  # no restarts left
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(p.bump.remote())


def test_an_actor_ends_with_its_last_handle(local):
    ray = local

    @ray.remote
    class Named:
        def ping(self):
            return True

    h = Named.options(name="short-lived").remote()
    assert ray.get(h.ping.remote())
    del h
    assert ray.util.list_named_actors() == []


def test_async_actor_calls_and_a_self_call_awaited(local):
    ray = local

    @ray.remote
    class Async:
        async def double(self, x):
            await asyncio.sleep(0)
            return 2 * x, ray.get_runtime_context().get_actor_id() is not None

        async def via_self(self, x):
            me = ray.get_runtime_context().current_actor
            doubled, _ = await me.double.remote(x)
            return doubled + 1

    a = Async.remote()
    assert ray.get(a.double.remote(2)) == (4, True)
    assert ray.get(a.via_self.remote(5)) == 11


def test_async_actors_awaiting_each_other(local):
    # Calls made inside an event loop start without blocking it, as in the
    # cluster: Ping waits (awaits) for Pong, which calls back into Ping.
    ray = local

    @ray.remote
    class Ping:
        async def ping(self, pong, n):
            return await pong.pong.remote(ray.get_runtime_context().current_actor, n)

        async def back(self, n):
            return n + 1

    @ray.remote
    class Pong:
        async def pong(self, ping, n):
            return 10 * await ping.back.remote(n)

    assert ray.get(Ping.remote().ping.remote(Pong.remote(), 1)) == 20


def test_getting_its_own_call_inside_an_async_actor_is_refused(local):
    ray = local

    @ray.remote
    class Selfish:
        async def outer(self):
            me = ray.get_runtime_context().current_actor
            return ray.get(me.inner.remote())  # would wait for itself

        async def inner(self):
            return 1

    with pytest.raises(RuntimeError, match="await"):
        ray.get(Selfish.remote().outer.remote())


# --------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------


def test_a_streaming_generator_runs_as_it_is_consumed(local, journal):
    ray = local
    write, read = journal

    @ray.remote
    def count(n):
        for i in range(n):
            write(f"made{i}")
            yield i
        raise ValueError("the end")

    gen = count.remote(2)
    assert read() == []
    first = next(gen)
    assert read() == ["made0"] and ray.get(first) == 0
    assert ray.get(next(gen)) == 1
    with pytest.raises(ValueError):
        ray.get(next(gen))  # the failed end, as the last item
    with pytest.raises(StopIteration):
        next(gen)


def test_dynamic_and_actor_generators(local):
    ray = local

    @ray.remote(num_returns="dynamic")
    def items(n):
        yield from range(n)

    @ray.remote
    class Source:
        def stream(self, n):
            yield from range(n)

    refs = ray.get(items.remote(3))
    assert [ray.get(r) for r in refs] == [0, 1, 2]
    s = Source.remote()
    assert [ray.get(r) for r in s.stream.remote(2)] == [0, 1]
    gen = s.stream.remote(3)
    assert ray.get(gen.completed()) is None  # run to its end
    assert [ray.get(r) for r in gen] == [0, 1, 2]


# --------------------------------------------------------------------------
# the rest of the API, and what local mode refuses
# --------------------------------------------------------------------------


def test_env_vars_resources_and_metrics(local):
    ray = local
    from manta.util.metrics import Counter

    @ray.remote(runtime_env={"env_vars": {"LM_FLAG": "on"}})
    def flag():
        Counter("lm_calls").inc()
        return os.environ.get("LM_FLAG")

    assert ray.get(flag.remote()) == "on"
    assert "LM_FLAG" not in os.environ
    Counter("lm_calls").inc()
    from manta._private.runtime import context

    assert context.require().metrics.snapshot()["lm_calls"] == {(): 2.0}
    assert ray.cluster_resources()["CPU"] >= 1
    assert len(ray.nodes()) == 1


def test_what_needs_a_cluster_is_refused_clearly(local):
    ray = local
    from manta.util.placement_group import placement_group

    with pytest.raises(NotImplementedError, match="local mode"):
        placement_group([{"CPU": 1}])

    @ray.remote(runtime_env={"working_dir": "."})
    def f():
        return 1

    with pytest.raises(NotImplementedError, match="working_dir"):
        f.remote()


def test_local_mode_cannot_connect_to_a_cluster(ray_clean):
    with pytest.raises(ValueError, match="local_mode"):
        ray_clean.init(local_mode=True, address="127.0.0.1:6379")
    assert not ray_clean.is_initialized()
