"""Errors: application exceptions, exception hierarchy, worker and actor
deaths, retries, restarts, cancellation and serialization failures.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import os
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def _count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path) as fh:
        return sum(1 for _ in fh)


# --------------------------------------------------------------------------
# exception classes
# --------------------------------------------------------------------------


EXCEPTION_NAMES = [
    "RayError",
    "RayTaskError",
    "RayActorError",
    "ActorDiedError",
    "GetTimeoutError",
    "TaskCancelledError",
    "WorkerCrashedError",
    "ObjectStoreFullError",
    "ObjectLostError",
]


@pytest.mark.parametrize("name", EXCEPTION_NAMES)
def test_exception_class_exists_and_derives_from_ray_error(ray, name):
    cls = getattr(ray.exceptions, name)
    assert isinstance(cls, type)
    assert issubclass(cls, Exception)
    assert issubclass(cls, ray.exceptions.RayError)


def test_exception_hierarchy(ray):
    exc = ray.exceptions
    assert issubclass(exc.ActorDiedError, exc.RayActorError)
    assert issubclass(exc.GetTimeoutError, TimeoutError)
    assert issubclass(exc.RayTaskError, exc.RayError)
    assert not issubclass(exc.RayTaskError, exc.RayActorError)


# --------------------------------------------------------------------------
# application errors in tasks
# --------------------------------------------------------------------------


def test_task_exception_is_ray_task_error_and_original_type(ray_start):
    ray = ray_start

    @ray.remote
    def explode_with_value_error():
        raise ValueError("the-original-message")

    with pytest.raises(ValueError) as info:
        ray.get(explode_with_value_error.remote())
    err = info.value
    assert isinstance(err, ray.exceptions.RayTaskError)
    assert isinstance(err, ray.exceptions.RayError)
    text = str(err)
    assert "the-original-message" in text
    # The remote traceback names the function that failed.
    assert "explode_with_value_error" in text


def test_task_exception_from_list_get(ray_start):
    ray = ray_start

    @ray.remote
    def maybe_fail(i):
        if i == 2:
            raise KeyError("k")
        return i

    with pytest.raises(KeyError) as info:
        ray.get([maybe_fail.remote(i) for i in range(4)])
    assert isinstance(info.value, ray.exceptions.RayTaskError)


def test_custom_exception_type_is_preserved(ray_start):
    ray = ray_start

    class InventoryError(Exception):
        pass

    @ray.remote
    def check_inventory():
        raise InventoryError("out of widgets")

    with pytest.raises(InventoryError) as info:
        ray.get(check_inventory.remote())
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert "out of widgets" in str(info.value)


def test_failed_task_error_propagates_to_dependent_task(ray_start):
    ray = ray_start

    @ray.remote
    def failing_source():
        raise ValueError("upstream")

    @ray.remote
    def consumer(x):
        return x

    with pytest.raises(ValueError) as info:
        ray.get(consumer.remote(failing_source.remote()))
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert "upstream" in str(info.value)


def test_error_in_nested_task_propagates_through_parent(ray_start):
    ray = ray_start

    @ray.remote
    def inner_failure():
        raise ZeroDivisionError("deep")

    @ray.remote
    def outer_caller():
        return ray.get(inner_failure.remote())

    with pytest.raises(ZeroDivisionError) as info:
        ray.get(outer_caller.remote())
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    text = str(info.value)
    assert "inner_failure" in text and "deep" in text


def test_task_error_can_be_caught_inside_caller_task(ray_start):
    ray = ray_start

    @ray.remote
    def fails():
        raise ValueError("caught")

    @ray.remote
    def catcher():
        try:
            ray.get(fails.remote())
        except ValueError as e:
            return isinstance(e, ray.exceptions.RayTaskError)
        return None

    assert ray.get(catcher.remote()) is True


def test_actor_method_exception_keeps_actor_alive(ray_start):
    ray = ray_start

    @ray.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def failing_method(self):
            self.calls += 1
            raise IndexError("method-broke")

        def calls_so_far(self):
            return self.calls

    a = Fragile.remote()
    with pytest.raises(IndexError) as info:
        ray.get(a.failing_method.remote())
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert "failing_method" in str(info.value)
    assert ray.get(a.calls_so_far.remote()) == 1


def test_actor_constructor_error_raises_actor_error_on_calls(ray_start):
    ray = ray_start

    @ray.remote
    class BrokenInit:
        def __init__(self):
            raise ValueError("ctor-failed")

        def ping(self):
            return "pong"

    a = BrokenInit.remote()
    with pytest.raises(ray.exceptions.RayActorError) as info:
        ray.get(a.ping.remote(), timeout=30)
    assert "ctor-failed" in str(info.value)


# --------------------------------------------------------------------------
# timeouts
# --------------------------------------------------------------------------


def test_get_timeout_error_is_also_timeout_error(ray_start, gate_helpers, tmp_path):
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    def waits():
        block_until(gate)
        return "done"

    ref = waits.remote()
    try:
        with pytest.raises(ray.exceptions.GetTimeoutError) as info:
            ray.get(ref, timeout=0.3)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, ray.exceptions.RayError)
    finally:
        touch(gate)
    assert ray.get(ref, timeout=30) == "done"


# --------------------------------------------------------------------------
# serialization failures
# --------------------------------------------------------------------------


def test_unpicklable_argument_raises_type_error(ray_start):
    ray = ray_start

    @ray.remote
    def f(x):
        return 1

    with pytest.raises(TypeError):
        f.remote(threading.Lock())


def test_unpicklable_actor_method_argument_raises_type_error(ray_start):
    ray = ray_start

    @ray.remote
    class A:
        def f(self, x):
            return 1

    a = A.remote()
    with pytest.raises(TypeError):
        a.f.remote(threading.Lock())


def test_put_unpicklable_value_raises_type_error(ray_start):
    ray = ray_start
    with pytest.raises(TypeError):
        ray.put(threading.Lock())


def test_task_returning_unpicklable_value_fails_at_get(ray_start):
    ray = ray_start

    @ray.remote
    def returns_lock():
        return threading.Lock()

    ref = returns_lock.remote()  # submission succeeds
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(ref, timeout=30)
    assert isinstance(info.value, TypeError)


# --------------------------------------------------------------------------
# retries of tasks
# --------------------------------------------------------------------------


def test_worker_crash_without_retries_raises_worker_crashed_error(ray_start):
    ray = ray_start

    @ray.remote(max_retries=0)
    def crash():
        os._exit(1)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(crash.remote(), timeout=50)


def test_worker_crash_is_retried_with_max_retries(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=2)
    def crash_first_time():
        first = not os.path.exists(marker)
        with open(marker, "a") as fh:
            fh.write("x\n")
        if first:
            os._exit(1)
        return "survived"

    assert ray.get(crash_first_time.remote(), timeout=50) == "survived"
    assert _count_lines(marker) == 2


def test_worker_crash_options_max_retries(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=0)
    def crash_first_time():
        first = not os.path.exists(marker)
        with open(marker, "a") as fh:
            fh.write("x\n")
        if first:
            os._exit(1)
        return "ok"

    assert ray.get(crash_first_time.options(max_retries=1).remote(), timeout=50) == "ok"
    assert _count_lines(marker) == 2


def test_application_error_not_retried_by_default(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=3)
    def always_fails():
        with open(marker, "a") as fh:
            fh.write("x\n")
        raise ValueError("no retry")

    with pytest.raises(ValueError):
        ray.get(always_fails.remote(), timeout=50)
    assert _count_lines(marker) == 1


def test_retry_exceptions_true_retries_application_error(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "attempts")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky():
        with open(marker, "a") as fh:
            fh.write("x\n")
        with open(marker) as fh:
            attempts = sum(1 for _ in fh)
        if attempts < 3:
            raise RuntimeError("attempt %d failed" % attempts)
        return attempts

    assert ray.get(flaky.remote(), timeout=50) == 3
    assert _count_lines(marker) == 3


def test_retry_exceptions_gives_up_after_max_retries(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "attempts")

    @ray.remote
    def always_fails():
        with open(marker, "a") as fh:
            fh.write("x\n")
        raise RuntimeError("still failing")

    with pytest.raises(RuntimeError) as info:
        ray.get(always_fails.options(max_retries=2, retry_exceptions=True).remote(), timeout=50)
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert _count_lines(marker) == 3


# --------------------------------------------------------------------------
# actor deaths and restarts
# --------------------------------------------------------------------------


@pytest.fixture
def mortal_cls(ray_start, tmp_path):
    """Actor class whose constructor appends a line to a file per run."""
    ray = ray_start
    ctor_log = str(tmp_path / "ctor_runs")

    @ray.remote
    class Mortal:
        def __init__(self):
            with open(ctor_log, "a") as fh:
                fh.write("%d\n" % os.getpid())
            self.value = 0

        def incr(self):
            self.value += 1
            return self.value

        def die(self):
            os._exit(1)

        def pid(self):
            return os.getpid()

    return Mortal, ctor_log


def test_actor_process_death_raises_actor_died_error(ray_start, mortal_cls):
    ray = ray_start
    Mortal, _ = mortal_cls
    a = Mortal.remote()
    assert ray.get(a.incr.remote()) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.die.remote(), timeout=50)
    with pytest.raises(ray.exceptions.ActorDiedError) as info:
        ray.get(a.incr.remote(), timeout=50)
    assert isinstance(info.value, ray.exceptions.RayActorError)
    assert isinstance(info.value, ray.exceptions.RayError)


def test_actor_with_max_restarts_comes_back_with_fresh_state(ray_start, mortal_cls, wait_for):
    ray = ray_start
    Mortal, ctor_log = mortal_cls
    a = Mortal.options(max_restarts=1).remote()
    assert ray.get([a.incr.remote(), a.incr.remote()]) == [1, 2]
    first_pid = ray.get(a.pid.remote())
    # The call that kills the process fails with an actor error.
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.die.remote(), timeout=50)

    def call_after_restart():
        try:
            return ray.get(a.incr.remote(), timeout=20)
        except ray.exceptions.RayActorError:
            return None

    # Constructor re-ran in a new process: state starts again from 0.
    assert wait_for(call_after_restart, timeout=45, message="restarted actor") == 1
    assert ray.get(a.pid.remote()) != first_pid
    assert _count_lines(ctor_log) == 2


@pytest.mark.timeout(90)
def test_actor_dies_for_good_after_max_restarts_used(ray_start, mortal_cls, wait_for):
    ray = ray_start
    Mortal, ctor_log = mortal_cls
    a = Mortal.options(max_restarts=1).remote()
    ray.get(a.incr.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.die.remote(), timeout=50)

    def alive_again():
        try:
            return ray.get(a.pid.remote(), timeout=20)
        except ray.exceptions.RayActorError:
            return None

    wait_for(alive_again, timeout=45, message="restarted actor")
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.die.remote(), timeout=50)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(a.incr.remote(), timeout=50)
    assert _count_lines(ctor_log) == 2


def test_actor_method_retried_after_restart_with_max_task_retries(ray_start, tmp_path):
    ray = ray_start
    marker = str(tmp_path / "method_attempts")

    @ray.remote(max_restarts=1, max_task_retries=1)
    class DiesOnce:
        def crash_once(self):
            first = not os.path.exists(marker)
            with open(marker, "a") as fh:
                fh.write("%d\n" % os.getpid())
            if first:
                os._exit(1)
            return "second attempt"

    a = DiesOnce.remote()
    assert ray.get(a.crash_once.remote(), timeout=50) == "second attempt"
    with open(marker) as fh:
        pids = [line.strip() for line in fh]
    assert len(pids) == 2 and pids[0] != pids[1]


# --------------------------------------------------------------------------
# cancellation
# --------------------------------------------------------------------------


def test_cancel_running_task_raises_task_cancelled_error(ray_start, tmp_path, wait_for):
    ray = ray_start
    started = str(tmp_path / "started")

    @ray.remote
    def busy_loop():
        open(started, "w").close()
        deadline = time.monotonic() + 45
        # Short sleeps: the cancellation is delivered between them.
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return "not cancelled"

    ref = busy_loop.remote()
    wait_for(lambda: os.path.exists(started), timeout=30, message="task start")
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)


@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_recursive_cancels_the_tasks_a_task_submitted(ray_start, tmp_path, wait_for, recursive):
    ray = ray_start
    started = str(tmp_path / "child-started")
    child_cancelled = str(tmp_path / "child-cancelled")
    release = str(tmp_path / "release")

    @ray.remote
    def child():
        open(started, "w").close()
        try:
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and not os.path.exists(release):
                time.sleep(0.05)
        except BaseException:
            open(child_cancelled, "w").close()
            raise
        return "child done"

    @ray.remote
    def parent():
        c = child.remote()
        open(str(tmp_path / "child-ref"), "w").write(c.hex())
        return ray.get(c)

    ref = parent.remote()
    wait_for(lambda: os.path.exists(started), timeout=30, message="the child to start")
    ray.cancel(ref, recursive=recursive)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    if recursive:
        wait_for(lambda: os.path.exists(child_cancelled), timeout=30, message="the child to be cancelled")
    else:
        # Left alone, the child runs to its end once released.
        open(release, "w").close()
        assert not os.path.exists(child_cancelled)


def test_cancel_force_kills_worker_process(ray_start, tmp_path, wait_for):
    ray = ray_start
    pid_file = str(tmp_path / "pid")

    @ray.remote(max_retries=0)
    def stuck():
        with open(pid_file + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        time.sleep(45)  # one long uninterruptible-by-cancel sleep
        return "not cancelled"

    ref = stuck.remote()
    wait_for(lambda: os.path.exists(pid_file), timeout=30, message="task start")
    with open(pid_file) as fh:
        pid = int(fh.read())
    ray.cancel(ref, force=True)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)

    def process_gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open("/proc/%d/stat" % pid) as fh:
                return fh.read().split(")")[-1].split()[0] == "Z"
        except OSError:
            return True

    wait_for(process_gone, timeout=30, message="worker process to exit")


def test_force_cancelled_task_is_never_retried(ray_start, tmp_path, wait_for):
    ray = ray_start
    runs = str(tmp_path / "runs")

    @ray.remote(max_retries=3)
    def stuck():
        with open(runs, "a") as fh:
            fh.write("run\n")
        time.sleep(45)
        return "not cancelled"

    ref = stuck.remote()
    wait_for(lambda: os.path.exists(runs), timeout=30, message="task start")
    ray.cancel(ref, force=True)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    time.sleep(1.5)  # a retry, if there were one, would have started by now
    with open(runs) as fh:
        assert fh.read().count("run") == 1


def test_cancel_pending_task_raises_task_cancelled_error(ray_start_2cpu, gate_helpers, tmp_path):
    ray = ray_start_2cpu
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote(num_cpus=1)
    def hold():
        block_until(gate)
        return "held"

    @ray.remote(num_cpus=1)
    def queued():
        return "ran"

    holders = [hold.remote(), hold.remote()]
    try:
        pending = queued.remote()
        ready, _ = ray.wait([pending], timeout=0.5)
        assert ready == []
        ray.cancel(pending)
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(pending, timeout=30)
    finally:
        touch(gate)
    assert ray.get(holders, timeout=30) == ["held", "held"]


def test_get_of_a_list_raises_at_its_first_failure_without_waiting_for_the_rest(ray_start, tmp_path, gate_helpers):
    """As in Ray: a failed task, or a call to a dead actor, ends get() of a
    list at once, whatever else in it still runs."""
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    def hang(path):
        block_until(path, timeout=60)

    @ray.remote
    def bad():
        raise ValueError("bad")

    @ray.remote
    class Doomed:
        def ping(self):
            return 1

    try:
        start = time.monotonic()
        with pytest.raises(ValueError):
            ray.get([hang.remote(gate), bad.remote()], timeout=50)
        failed = bad.remote()
        with pytest.raises(ValueError):
            ray.get([failed, hang.remote(gate)], timeout=50)  # failed already, or soon
        doomed = Doomed.remote()
        ray.get(doomed.ping.remote())
        ray.kill(doomed)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get([hang.remote(gate), doomed.ping.remote()], timeout=50)
        assert time.monotonic() - start < 30
    finally:
        touch(gate)


def test_an_error_that_cannot_travel_or_be_subclassed_still_reports(ray_start):
    """As in Ray: an exception that cannot be pickled arrives as a
    RayTaskError whose cause says so; one whose class refuses subclasses is
    raised as a RayTaskError with the exception as its cause."""
    ray = ray_start

    class _Unpicklable(Exception):
        def __init__(self):
            self.lock = threading.Lock()

    class _Final(Exception):
        def __init_subclass__(cls, *args, **kwargs):
            raise TypeError("final")

    @ray.remote
    def unpicklable():
        raise _Unpicklable()

    @ray.remote
    def final():
        raise _Final("from the task")

    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(unpicklable.remote())
    assert isinstance(info.value.cause, ray.exceptions.RayError)
    assert "isn't serializable" in str(info.value.cause)
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(final.remote())
    assert isinstance(info.value.cause, _Final) and str(info.value.cause) == "from the task"


def test_a_task_exceptions_own_fields_survive_and_it_is_caught_by_its_type(ray_start, backend_name):
    ray = ray_start

    class Coded(Exception):
        def __init__(self, msg, code=7):
            super().__init__(msg)
            self.code = code

    class NeedsTwo(Exception):
        def __init__(self, msg, detail):
            super().__init__(msg)
            self.detail = detail

    @ray.remote
    def coded():
        raise Coded("boom", code=42)

    @ray.remote
    def needs_two():
        raise NeedsTwo("boom", "the detail")

    with pytest.raises(Coded) as info:
        ray.get(coded.remote(), timeout=60)
    assert info.value.code == 42 and isinstance(info.value, ray.exceptions.RayTaskError)
    if backend_name == "ray":
        return  # beyond Ray, which cannot rebuild it (UnserializableException) without a custom serializer
    with pytest.raises(NeedsTwo) as info:
        ray.get(needs_two.remote(), timeout=60)
    assert info.value.detail == "the detail"
