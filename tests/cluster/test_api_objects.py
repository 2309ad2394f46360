"""Objects: put/get, ObjectRef, wait, futures and asyncio, numpy zero-copy,
and releasing object-store memory.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import asyncio
import concurrent.futures
import string
import threading

import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gated_task(ray_start, gate_helpers, tmp_path):
    """(make, open_gate): make(value) -> ref of a task that finishes only
    after open_gate() was called (bounded by a 30 s deadline inside)."""
    ray = ray_start
    block_until, touch = gate_helpers
    gate = str(tmp_path / "gate")

    @ray.remote
    def gated(value):
        block_until(gate)
        return value

    def open_gate():
        touch(gate)

    yield (lambda value: gated.remote(value)), open_gate
    open_gate()


def _is_subsequence(sub, seq):
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


# --------------------------------------------------------------------------
# put / get
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -7, 3.5, "text", b"\x00bytes", None, True, [1, "a", None], {"k": [1, 2], 3: "v"}, (1, (2, 3)), set([1, 2])],
    ids=lambda v: type(v).__name__,
)
def test_put_get_roundtrip(ray_start, value):
    ray = ray_start
    ref = ray.put(value)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == value


def test_get_list_preserves_order(ray_start):
    ray = ray_start
    refs = [ray.put(i) for i in range(20)]
    assert ray.get(refs) == list(range(20))
    assert ray.get(list(reversed(refs))) == list(reversed(range(20)))


def test_get_empty_list_returns_empty_list(ray_start):
    ray = ray_start
    assert ray.get([]) == []


def test_get_same_ref_repeatedly(ray_start):
    ray = ray_start
    ref = ray.put({"a": 1})
    assert ray.get(ref) == ray.get(ref) == {"a": 1}
    assert ray.get([ref, ref]) == [{"a": 1}, {"a": 1}]


def test_get_of_a_pending_ref_listed_twice_returns_when_it_is_ready(ray_start, gated_task):
    ray = ray_start
    make, open_gate = gated_task
    ref = make("v")
    out = []
    getter = threading.Thread(target=lambda: out.append(ray.get([ref, ref])), daemon=True)
    getter.start()
    open_gate()
    getter.join(timeout=30)
    assert out == [["v", "v"]]


def test_put_of_container_with_refs_keeps_refs(ray_start):
    ray = ray_start
    inner = ray.put("inner")
    outer = ray.get(ray.put([inner, {"r": inner}]))
    assert isinstance(outer[0], ray.ObjectRef)
    assert isinstance(outer[1]["r"], ray.ObjectRef)
    assert ray.get(outer[0]) == "inner"


def test_put_object_ref_raises_type_error(ray_start):
    ray = ray_start
    ref = ray.put(1)
    with pytest.raises(TypeError):
        ray.put(ref)


def test_get_with_timeout_on_ready_object(ray_start):
    ray = ray_start
    ref = ray.put(5)
    assert ray.get(ref, timeout=10) == 5
    assert ray.get([ref], timeout=10) == [5]


def test_get_timeout_raises_get_timeout_error(ray_start, gated_task):
    ray = ray_start
    make, open_gate = gated_task
    ref = make("late")
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.5)
    with pytest.raises(TimeoutError):
        ray.get([ref], timeout=0.1)
    open_gate()
    assert ray.get(ref, timeout=30) == "late"


# --------------------------------------------------------------------------
# ObjectRef
# --------------------------------------------------------------------------


def test_object_ref_is_hashable_and_comparable(ray_start):
    ray = ray_start
    a = ray.put(1)
    b = ray.put(1)
    assert a == a
    assert a != b
    assert hash(a) == hash(a)
    table = {a: "a", b: "b"}
    assert table[a] == "a" and table[b] == "b"
    assert len({a, a, b}) == 2


def test_object_ref_hex_is_stable_hex_string(ray_start):
    ray = ray_start
    a = ray.put(1)
    b = ray.put(1)
    h = a.hex()
    assert isinstance(h, str) and h
    assert set(h) <= set(string.hexdigits)
    assert h == a.hex()
    assert h != b.hex()


def test_object_refs_of_distinct_tasks_differ(ray_start):
    ray = ray_start

    @ray.remote
    def f():
        return 1

    refs = [f.remote() for _ in range(10)]
    assert len({r.hex() for r in refs}) == 10
    assert len(set(refs)) == 10


def test_object_ref_future_returns_concurrent_future(ray_start):
    ray = ray_start

    @ray.remote
    def f(x):
        return x * 2

    fut = f.remote(21).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 42


def test_object_ref_future_of_failed_task_carries_error(ray_start):
    ray = ray_start

    @ray.remote
    def fail():
        raise ValueError("future-failure")

    fut = fail.remote().future()
    exc = fut.exception(timeout=30)
    assert isinstance(exc, ray.exceptions.RayTaskError)
    assert isinstance(exc, ValueError)
    with pytest.raises(ValueError):
        fut.result(timeout=5)


def test_await_object_ref_in_driver_coroutine(ray_start):
    ray = ray_start

    @ray.remote
    def f(x):
        return x + 1

    async def main():
        first = await f.remote(1)
        both = await asyncio.gather(f.remote(10), f.remote(20))
        return first, list(both)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (2, [11, 21])


def test_await_object_ref_of_put_value(ray_start):
    ray = ray_start
    ref = ray.put("stored")

    async def main():
        return await ref

    assert asyncio.run(asyncio.wait_for(main(), 30)) == "stored"


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------


def test_wait_splits_ready_and_not_ready(ray_start, gated_task):
    ray = ray_start
    make, open_gate = gated_task
    fast1 = ray.put("a")
    slow = make("slow")
    fast2 = ray.put("b")
    refs = [fast1, slow, fast2]
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=30)
    assert ready == [fast1, fast2]
    assert not_ready == [slow]
    open_gate()
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=30)
    assert ready == refs and not_ready == []


def test_wait_returns_at_most_num_returns_in_input_order(ray_start):
    ray = ray_start
    refs = [ray.put(i) for i in range(6)]
    refs.reverse()
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=30)
    assert len(ready) == 3 and len(not_ready) == 3
    assert sorted(ready + not_ready, key=lambda r: r.hex()) == sorted(refs, key=lambda r: r.hex())
    assert _is_subsequence(ready, refs)
    assert _is_subsequence(not_ready, refs)


def test_wait_default_num_returns_is_one(ray_start):
    ray = ray_start
    refs = [ray.put(i) for i in range(4)]
    ready, not_ready = ray.wait(refs)
    assert len(ready) == 1 and len(not_ready) == 3
    assert set(ready) | set(not_ready) == set(refs)


def test_wait_timeout_returns_partial_result(ray_start, gated_task):
    ray = ray_start
    make, open_gate = gated_task
    done = ray.put(1)
    pending = make(2)
    ready, not_ready = ray.wait([pending, done], num_returns=2, timeout=0.5)
    assert ready == [done]
    assert not_ready == [pending]
    ready, not_ready = ray.wait([pending], timeout=0)
    assert ready == [] and not_ready == [pending]
    open_gate()
    assert ray.get(pending, timeout=30) == 2


def test_wait_blocks_until_ready_without_timeout(ray_start):
    ray = ray_start

    @ray.remote
    def f():
        return 1

    refs = [f.remote() for _ in range(4)]
    ready, not_ready = ray.wait(refs, num_returns=4)
    assert ready == refs and not_ready == []


def test_wait_fetch_local_false_is_accepted(ray_start):
    ray = ray_start
    ref = ray.put(1)
    ready, not_ready = ray.wait([ref], num_returns=1, timeout=10, fetch_local=False)
    assert ready == [ref] and not_ready == []


def test_wait_empty_list(ray_start):
    ray = ray_start
    ready, not_ready = ray.wait([])
    assert ready == [] and not_ready == []


def test_wait_num_returns_larger_than_list_raises_value_error(ray_start):
    ray = ray_start
    ref = ray.put(1)
    with pytest.raises(ValueError):
        ray.wait([ref], num_returns=2)


def test_wait_duplicate_refs_raises_value_error(ray_start):
    ray = ray_start
    ref = ray.put(1)
    with pytest.raises(ValueError):
        ray.wait([ref, ref])


def test_wait_single_ref_not_in_list_raises_type_error(ray_start):
    ray = ray_start
    ref = ray.put(1)
    with pytest.raises(TypeError):
        ray.wait(ref)


# --------------------------------------------------------------------------
# get of things that are not ObjectRefs
# --------------------------------------------------------------------------


def test_get_bare_non_object_ref_raises_value_error(ray_start):
    # Ray raises ValueError (not TypeError) when the argument itself is neither
    # an ObjectRef nor a list.
    ray = ray_start
    with pytest.raises(ValueError):
        ray.get(1)
    with pytest.raises(ValueError):
        ray.get("not a ref")


def test_get_list_with_non_object_ref_raises_type_error(ray_start):
    ray = ray_start
    with pytest.raises(TypeError):
        ray.get([ray.put(1), 2])


# --------------------------------------------------------------------------
# numpy
# --------------------------------------------------------------------------


def test_numpy_array_from_large_put_is_read_only_and_equal(ray_start):
    ray = ray_start
    np = pytest.importorskip("numpy")
    arr = np.random.default_rng(0).random(512 * 1024)  # 4 MiB of float64
    out = ray.get(ray.put(arr))
    assert isinstance(out, np.ndarray)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr)
    assert out.flags.writeable is False
    with pytest.raises(ValueError):
        out[0] = 1.0
    # The original stays writable.
    arr[0] = 1.0


def test_numpy_array_argument_is_read_only_in_task(ray_start):
    ray = ray_start
    np = pytest.importorskip("numpy")

    @ray.remote
    def info(a):
        return bool(a.flags.writeable), float(a.sum())

    arr = np.ones(300_000)  # > 1 MiB
    assert ray.get(info.remote(arr)) == (False, 300_000.0)
    assert ray.get(info.remote(ray.put(arr))) == (False, 300_000.0)


def test_numpy_array_returned_by_task(ray_start):
    ray = ray_start
    np = pytest.importorskip("numpy")

    @ray.remote
    def make(n):
        return np.arange(n, dtype=np.int32)

    out = ray.get(make.remote(1_000_000))
    assert np.array_equal(out, np.arange(1_000_000, dtype=np.int32))


# --------------------------------------------------------------------------
# memory release (own cluster)
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_dropped_objects_free_object_store_memory(ray_clean):
    """20 x 100 MiB through a 400 MiB store works when refs are dropped."""
    ray = ray_clean
    np = pytest.importorskip("numpy")
    ray.init(num_cpus=1, object_store_memory=400 * 1024 * 1024)
    try:
        size = 100 * 1024 * 1024
        for i in range(20):
            ref = ray.put(np.full(size, i % 251, dtype=np.uint8))
            value = ray.get(ref)
            assert value.nbytes == size
            assert int(value[0]) == i % 251 and int(value[-1]) == i % 251
            del value, ref
    finally:
        ray.shutdown()


def test_object_store_full_error_exists(ray):
    assert issubclass(ray.exceptions.ObjectStoreFullError, ray.exceptions.RayError)


def test_values_come_back_aligned_for_numpy(ray_start):
    ray = ray_start
    np = pytest.importorskip("numpy")
    for size in [(10, 20, 30), (3,), (1000,)]:  # inline and small, as in Ray's own test
        y = ray.get(ray.put(np.random.normal(size=size)))
        assert y.ctypes.data % (64 if y.nbytes >= 4096 else 8) == 0


def test_on_completed_calls_back_with_the_value_or_the_error(ray_start, wait_for):
    ray = ray_start
    seen = []

    @ray.remote
    def fails():
        raise KeyError("no")

    value_ref, error_ref = ray.put(7), fails.remote()
    value_ref._on_completed(lambda v: seen.append(v))
    error_ref._on_completed(lambda e: seen.append(isinstance(e, ray.exceptions.RayTaskError)))
    wait_for(lambda: len(seen) == 2, timeout=30)
    assert sorted(seen, key=str) == [7, True], seen


def test_a_registered_serializer_carries_what_pickle_cannot(ray_start):
    import importlib

    ray = ray_start
    util = importlib.import_module(f"{ray.__name__}.util")

    class Locked:
        def __init__(self, x):
            self.x = x
            self.lock = threading.Lock()  # unpicklable

    util.register_serializer(Locked, serializer=lambda o: o.x, deserializer=lambda x: Locked(x))
    try:
        assert ray.get(ray.put(Locked(3))).x == 3

        @ray.remote
        def read(o):
            return o.x

        assert ray.get(read.remote(Locked(5))) == 5
    finally:
        util.deregister_serializer(Locked)
    with pytest.raises(Exception):  # noqa: B017 (Ray: TypeError, manta: RaySerializationError)
        ray.put(Locked(1))
    util.deregister_serializer(Locked)  # again: nothing happens


def test_a_ref_pickled_out_of_band_keeps_its_object(ray_start):
    import gc
    import importlib

    ray = ray_start
    cloudpickle = importlib.import_module(f"{ray.__name__}.cloudpickle")

    @ray.remote
    def load_and_get(blob):
        return ray.get(cloudpickle.loads(blob))

    ref = ray.put("kept")
    blob = cloudpickle.dumps(ref)
    del ref
    gc.collect()
    assert ray.get(cloudpickle.loads(blob), timeout=30) == "kept"
    assert ray.get(load_and_get.remote(blob), timeout=30) == "kept"
