"""Generator tasks and methods, as in Ray 2.60: a function that yields
streams its items as they come (an ObjectRefGenerator), an error raised
mid-stream shows at its item, a retry does not repeat items the caller has,
backpressure pauses the generator, and num_returns="dynamic" hands back one
ref holding all the items.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import asyncio
import time

import pytest

pytestmark = pytest.mark.timeout(120)


def test_a_generator_task_streams_its_items_in_order(ray_start):
    ray = ray_start

    @ray.remote
    def count(n):
        for i in range(n):
            yield i * i

    gen = count.remote(5)
    assert type(gen).__name__ == "ObjectRefGenerator"
    assert [ray.get(ref) for ref in gen] == [0, 1, 4, 9, 16]
    with pytest.raises(StopIteration):
        next(gen)


def test_items_are_usable_before_the_generator_ends(ray_start, tmp_path):
    ray = ray_start
    gate = str(tmp_path / "gate")

    @ray.remote
    def paced(path):
        import os

        yield "first"
        while not os.path.exists(path):  # held until the caller has item one
            time.sleep(0.01)
        yield "second"

    gen = paced.remote(gate)
    assert ray.get(next(gen), timeout=30) == "first"
    open(gate, "w").close()
    assert ray.get(next(gen), timeout=30) == "second"


def test_an_error_mid_stream_is_raised_at_its_item_then_the_stream_ends(ray_start):
    ray = ray_start

    @ray.remote(max_retries=0)
    def flaky():
        yield 1
        raise ValueError("stream broke")

    gen = flaky.remote()
    assert ray.get(next(gen)) == 1
    with pytest.raises(ValueError, match="stream broke"):
        ray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_a_retried_generator_does_not_repeat_what_the_caller_has(ray_start):
    ray = ray_start

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def next(self):
            self.n += 1
            return self.n

    @ray.remote(max_retries=2, retry_exceptions=[KeyError])
    def twice(counter):
        yield "a"
        if ray.get(counter.next.remote()) == 1:
            raise KeyError("first attempt")
        yield "b"

    counter = Counter.remote()
    assert [ray.get(ref) for ref in twice.remote(counter)] == ["a", "b"]
    assert ray.get(counter.next.remote()) == 3  # ran twice


def test_actor_methods_and_async_generators_stream(ray_start):
    ray = ray_start

    @ray.remote
    class Source:
        def sync_items(self, n):
            for i in range(n):  # noqa: UP028 (Ray's generator runner calls send(): no `yield from range`)
                yield i

    @ray.remote
    class AsyncSource:
        async def async_items(self, n):
            for i in range(n):
                await asyncio.sleep(0.001)
                yield i

    assert [ray.get(r) for r in Source.remote().sync_items.remote(3)] == [0, 1, 2]
    assert [ray.get(r) for r in AsyncSource.remote().async_items.remote(3)] == [0, 1, 2]


def test_a_generator_is_iterated_with_async_for(ray_start):
    ray = ray_start

    @ray.remote
    def count(n):
        for i in range(n):  # noqa: UP028 (as above)
            yield i

    async def collect():
        return [await ref async for ref in count.remote(4)]

    assert asyncio.run(collect()) == [0, 1, 2, 3]


def test_backpressure_pauses_the_generator_until_items_are_taken(ray_start):
    ray = ray_start

    @ray.remote(_generator_backpressure_num_objects=1)
    def stamps():
        for _ in range(3):
            yield time.time()

    gen = stamps.remote()
    time.sleep(1.0)
    first = ray.get(next(gen))
    second = ray.get(next(gen))
    # Item two was made only once item one was taken, a second later.
    assert second - first >= 0.8


def test_large_items_travel_through_the_store(ray_start):
    ray = ray_start
    np = pytest.importorskip("numpy")

    @ray.remote
    def arrays():
        for i in range(3):
            yield np.full(500_000, i)

    assert [int(ray.get(r)[-1]) for r in arrays.remote()] == [0, 1, 2]


def test_dynamic_returns_one_ref_holding_every_item(ray_start):
    ray = ray_start

    @ray.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i + 100

    ref = split.remote(3)
    assert isinstance(ref, ray.ObjectRef)
    items = ray.get(ref)
    assert type(items).__name__ == "DynamicObjectRefGenerator"
    assert [ray.get(r) for r in items] == [100, 101, 102]


def test_streaming_needs_a_generator(ray_start):
    ray = ray_start

    def plain():
        return 1

    with pytest.raises(ValueError, match="generator"):
        ray.remote(num_returns="streaming")(plain)


def test_a_dropped_generator_does_not_hold_its_task_back(ray_start):
    # Paused by backpressure, then its caller lets go: the task runs to its end.
    ray = ray_start

    @ray.remote(_generator_backpressure_num_objects=1)
    def many():
        for i in range(50):  # noqa: UP028 (Ray sends into generators: no `yield from range`)
            yield i

    gen = many.remote()
    assert ray.get(next(gen)) == 0
    end = gen.completed()
    del gen
    ray.get(end, timeout=60)
