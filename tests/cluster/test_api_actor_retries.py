"""Actor methods retried on their own exceptions (retry_exceptions, per method
and via .options()), from the same budget as retries after restarts, and
sys.exit() in any kind of actor ending its process.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def classes(ray_start):
    ray = ray_start

    class Flaky(Exception):
        pass

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n - 1

        def get(self):
            return self.n

    @ray.remote(max_task_retries=3, max_restarts=2)
    class Trouble:
        @ray.method(max_task_retries=5, retry_exceptions=[Flaky])
        def fail_n(self, counter, n):
            c = ray.get(counter.incr.remote())
            if c < n:
                raise Flaky()
            return c

        @ray.method(retry_exceptions=[Flaky])
        def act(self, counter, actions):
            import sys

            c = ray.get(counter.incr.remote())
            action = actions[c] if c < len(actions) else "return"
            if action == "raise":
                raise Flaky()
            if action == "exit":
                sys.exit(1)
            return c

    return ray, Flaky, Counter, Trouble


def test_a_method_is_retried_on_its_exceptions_exactly_as_often_as_allowed(classes):
    ray, Flaky, Counter, Trouble = classes
    counter, t = Counter.remote(), Trouble.remote()
    assert ray.get(t.fail_n.remote(counter, 5)) == 5  # five raises, then success
    assert ray.get(counter.get.remote()) == 6
    counter2 = Counter.remote()
    with pytest.raises(Flaky):
        ray.get(t.fail_n.remote(counter2, 6))  # one more than max_task_retries=5
    assert ray.get(counter2.get.remote()) == 6
    counter3 = Counter.remote()
    with pytest.raises(Flaky):
        ray.get(t.fail_n.options(max_task_retries=1).remote(counter3, 5))
    assert ray.get(counter3.get.remote()) == 2


@pytest.mark.parametrize("concurrency", [1, 2])
def test_raises_and_exits_share_one_budget(classes, concurrency):
    ray, Flaky, Counter, Trouble = classes
    counter = Counter.remote()
    t = Trouble.options(max_concurrency=concurrency).remote()
    # raise, exit (a restart), raise: three retries of the class's three.
    assert ray.get(t.act.remote(counter, ["raise", "exit", "raise"])) == 3
    counter2 = Counter.remote()
    with pytest.raises(Flaky):
        ray.get(t.act.remote(counter2, ["raise", "raise", "raise", "raise"]))
    assert ray.get(counter2.get.remote()) == 4
