"""Short tasks pipelined onto their leases (leasing.py): a burst keeps every
result, and a task never waits long behind a slow one on its worker."""

import time

import pytest
from tests_support import BACKEND

pytestmark = pytest.mark.timeout(90)


def test_short_tasks_do_not_wait_behind_a_slow_one(ray_start_2cpu):
    ray = ray_start_2cpu

    @ray.remote(max_retries=3)
    def work(x, sleep=0.0):
        time.sleep(sleep)
        return x

    assert ray.get([work.remote(i) for i in range(300)]) == list(range(300))  # short: pipelined from here
    recalls = _count_recalls() if BACKEND == "manta" else None
    shorts = [work.remote(i) for i in range(40)]
    slow = work.remote(-1, sleep=4.0)
    shorts += [work.remote(i) for i in range(40, 120)]
    start = time.monotonic()
    ready, _ = ray.wait(shorts, num_returns=len(shorts), timeout=3.0)
    # Behind the slow one on its worker, they would take 4 s; the other
    # worker runs them all instead.
    assert len(ready) == len(shorts), f"{len(shorts) - len(ready)} short tasks waited behind the slow one"
    assert ray.get(shorts) == list(range(120))
    assert ray.wait([slow], timeout=0)[0] == [] and time.monotonic() - start < 3.5
    assert ray.get(slow) == -1
    if recalls is not None:
        assert recalls(), "no task was asked back from the slow one's worker"


@pytest.mark.parametrize("retries", [3, 0])
def test_a_burst_is_pipelined_unless_its_tasks_may_not_run_again(ray_start_2cpu, retries):
    if BACKEND != "manta":
        pytest.skip("manta's lease client")
    from manta._private.runtime import leasing

    ray = ray_start_2cpu

    @ray.remote(max_retries=retries)
    def square(x):
        return x * x

    ray.get([square.remote(i) for i in range(50)])
    deepest = _depths(lambda: ray.get([square.remote(i) for i in range(2000)]) == [i * i for i in range(2000)])
    if retries:
        assert 1 < max(deepest) <= leasing.PIPELINE_DEPTH, "no task was pushed behind another"
    else:
        assert max(deepest) == 1  # a worker that dies takes only the task it runs with it
    _tasks().leases.validate()


def _tasks():
    from manta._private import session

    return session.runtime().tasks


def _depths(burst):
    """How many tasks each push's lease held with it, while `burst()` runs (and must hold)."""
    tasks = _tasks()
    deepest = []
    original = tasks._push
    tasks._push = lambda c, from_caller=False: (deepest.append(len(c.lease.tasks)), original(c, from_caller))
    try:
        assert burst(), "a result was wrong"
    finally:
        del tasks._push
    return deepest


def _count_recalls():
    """Counts the recalls the lease client sends from now on; returns the count's reader."""
    from manta._private.runtime import leasing

    tasks = _tasks()
    sent = []
    original = tasks._run[leasing.Recall]

    def recall(c):
        sent.append(c)
        original(c)

    tasks._run[leasing.Recall] = recall
    return lambda: len(sent)
