"""manta-only: a task with a leased worker idle is pushed from the caller's
thread (Submitter._push_from_caller), and everything else still goes through
the I/O thread, with the lease client kept consistent under both."""

import threading

import pytest
from tests_support import BACKEND

pytestmark = [pytest.mark.skipif(BACKEND != "manta", reason="manta's submission path"), pytest.mark.timeout(60)]


def _submitter():
    from manta._private import session

    return session.runtime().tasks


def test_sync_tasks_skip_the_io_thread_once_a_worker_is_leased(ray_start_2cpu):
    ray = ray_start_2cpu

    @ray.remote
    def double(x):
        return 2 * x

    assert ray.get(double.remote(1)) == 2  # the first one leases a worker, through the I/O thread
    tasks = _submitter()
    posted = []
    original = tasks.submit_io
    tasks.submit_io = lambda task, posted_=False: (posted.append(task), original(task, posted_))
    try:
        assert [ray.get(double.remote(i)) for i in range(50)] == [2 * i for i in range(50)]
    finally:
        del tasks.submit_io
    # A lease goes back after its idle time, and the next task asks again: a
    # few may be posted, not one in every round trip.
    assert len(posted) < 5


def test_a_task_waiting_on_an_argument_goes_through_the_io_thread(ray_start_2cpu):
    ray = ray_start_2cpu

    @ray.remote
    def slow(x):
        import time

        time.sleep(0.2)
        return x + 1

    @ray.remote
    def double(x):
        return 2 * x

    ray.get(double.remote(0))
    assert ray.get(double.remote(slow.remote(1))) == 4  # resolved on the I/O thread, then pushed
    assert ray.get(double.remote(ray.put(5))) == 10  # an owned stored argument needs no resolving


def test_threads_submitting_at_once_keep_every_result_and_the_lease_client_whole(ray_start_2cpu):
    ray = ray_start_2cpu

    @ray.remote
    def square(x):
        return x * x

    errors = []

    def run(base):
        try:
            for i in range(100):
                assert ray.get(square.remote(base + i)) == (base + i) ** 2
            refs = [square.remote(base + i) for i in range(100)]
            assert ray.get(refs) == [(base + i) ** 2 for i in range(100)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(1000 * t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tasks = _submitter()
    with tasks.leases_lock:
        tasks.leases.validate()
        assert tasks.posted == 0
