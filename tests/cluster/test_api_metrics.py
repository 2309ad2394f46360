"""Application metrics (`ray.util.metrics`): Counter, Gauge and Histogram,
their validation, and recording in the driver, in tasks and in actors.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
The checks of recorded values read manta's per-process registry, so they run
on manta only.
"""

import importlib
import uuid
import warnings

import pytest
from tests_support import BACKEND

pytestmark = pytest.mark.timeout(60)

manta_only = pytest.mark.skipif(BACKEND != "manta", reason="reads manta's metrics registry")


@pytest.fixture(scope="module")
def metrics(ray):
    return importlib.import_module(ray.__name__ + ".util.metrics")


def _name(prefix):
    # Workers outlive tests, and their registries with them: one name per test.
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------
# the API, without a cluster
# --------------------------------------------------------------------------


def test_info_and_default_tags(metrics):
    c = metrics.Counter("requests_total", "Requests served.", tag_keys=("route",))
    assert c.set_default_tags({"route": "/"}) is c
    assert c.info == {
        "name": "requests_total", "description": "Requests served.", "tag_keys": ("route",),
        "default_tags": {"route": "/"},
    }
    h = metrics.Histogram("latency", boundaries=[0.1, 1.0], tag_keys=("op",))
    assert h.info["boundaries"] == [0.1, 1.0]
    assert metrics.Gauge("level").info["tag_keys"] == ()


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda mt: mt.Counter(""), ValueError),
        (lambda mt: mt.Counter("c", tag_keys=["k"]), TypeError),
        (lambda mt: mt.Gauge("g", tag_keys=("k", 2)), TypeError),
        (lambda mt: mt.Histogram("h"), ValueError),
        (lambda mt: mt.Histogram("h", boundaries=[]), ValueError),
        (lambda mt: mt.Histogram("h", boundaries=[1.0, 0]), ValueError),
        (lambda mt: mt.Histogram("h", boundaries=[-1.0]), ValueError),
    ],
)
def test_construction_errors(metrics, build, error):
    with pytest.raises(error):
        build(metrics)


@pytest.mark.parametrize(
    "record, error",
    [
        (lambda c, g, h: c.set_default_tags({"other": "x"}), ValueError),
        (lambda c, g, h: c.set_default_tags({"k": 1}), TypeError),
        (lambda c, g, h: c.inc(), ValueError),  # the tag key has no value
        (lambda c, g, h: c.inc(1, tags={"k": 5}), TypeError),
        (lambda c, g, h: c.inc(0, tags={"k": "a"}), ValueError),
        (lambda c, g, h: c.inc(-2, tags={"k": "a"}), ValueError),
        (lambda c, g, h: c.inc("1", tags={"k": "a"}), TypeError),
        (lambda c, g, h: g.set("high", tags={"k": "a"}), TypeError),
        (lambda c, g, h: g.set(1.0), ValueError),
        (lambda c, g, h: h.observe(None, tags={"k": "a"}), TypeError),
        (lambda c, g, h: h.observe("slow", tags={"k": "a"}), TypeError),
    ],
)
def test_recording_errors(metrics, record, error):
    c = metrics.Counter("c_errors", tag_keys=("k",))
    g = metrics.Gauge("g_errors", tag_keys=("k",))
    h = metrics.Histogram("h_errors", boundaries=[1.0], tag_keys=("k",))
    with pytest.raises(error):
        record(c, g, h)


def test_an_invalid_name_warns_and_the_metric_records_nothing(metrics):
    with pytest.warns(UserWarning):
        c = metrics.Counter("1_starts_with_a_digit")
    c.inc()  # discarded, not an error


def test_gauge_set_none_is_a_no_op(metrics):
    metrics.Gauge("g_none", tag_keys=("k",)).set(None)


# --------------------------------------------------------------------------
# recording in the driver, tasks and actors
# --------------------------------------------------------------------------


def test_metrics_record_in_driver_task_and_actors(ray_start, metrics):
    ray = ray_start
    Counter, Gauge, Histogram = metrics.Counter, metrics.Gauge, metrics.Histogram
    name = _name("work")

    Counter(name, tag_keys=("where",)).inc(tags={"where": "driver"})

    @ray.remote
    def task(n):
        c = Counter(name, tag_keys=("where",)).set_default_tags({"where": "task"})
        for _ in range(n):
            c.inc()
        Gauge(name + "_level").set(n)
        Histogram(name + "_size", boundaries=[1, 10]).observe(n)
        return n

    class Recorder:
        def __init__(self):
            self.c = Counter(name, tag_keys=("where",)).set_default_tags({"where": "actor"})

        def add(self, k):
            self.c.inc(k)
            return k

    @ray.remote
    class AsyncRecorder:
        async def add(self, k):
            Counter(name, tag_keys=("where",)).inc(k, tags={"where": "async"})
            return k

    assert ray.get([task.remote(i) for i in range(1, 4)]) == [1, 2, 3]
    for cls in (ray.remote(Recorder), ray.remote(max_concurrency=4)(Recorder), AsyncRecorder):
        a = cls.remote()
        assert ray.get([a.add.remote(i) for i in range(1, 4)]) == [1, 2, 3]


def test_a_metric_made_in_the_driver_records_in_a_task(ray_start, metrics):
    ray = ray_start
    c = metrics.Counter(_name("shipped"), tag_keys=("k",))

    @ray.remote
    def use():
        c.inc(3, tags={"k": "v"})  # pickled with the function
        return True

    assert ray.get(use.remote())


# --------------------------------------------------------------------------
# what was recorded (manta's registry)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_snapshot():
    """snapshot() of the registry of the process it is called in (made here,
    so remote code that calls it ships it by value)."""

    def snapshot():
        from manta._private.runtime import context

        return context.require().metrics.snapshot()

    return snapshot


@manta_only
def test_driver_values_are_in_its_registry(ray_start, metrics, registry_snapshot):
    c = metrics.Counter(_name("driver"), tag_keys=("route",)).set_default_tags({"route": "/"})
    c.inc()
    c.inc(2.5)
    c.inc(tags={"route": "/api"})
    g = metrics.Gauge(_name("level"))
    g.set(3)
    g.set(-1)
    h = metrics.Histogram(_name("latency"), boundaries=[1, 10])
    for v in (0.5, 5, 50):
        h.observe(v)
    snap = registry_snapshot()
    assert snap[c.info["name"]] == {(("route", "/"),): 3.5, (("route", "/api"),): 1.0}
    assert snap[g.info["name"]] == {(): -1.0}
    hist = snap[h.info["name"]][()]
    assert (hist.bucket_counts, hist.count, hist.sum) == ((1, 1, 1), 3, 55.5)


@manta_only
def test_task_and_actor_values_are_in_their_workers_registries(ray_start, metrics, registry_snapshot):
    ray = ray_start
    Counter = metrics.Counter
    name = _name("calls")

    @ray.remote
    def task():
        Counter(name, tag_keys=("who",)).inc(2, tags={"who": "task"})
        return registry_snapshot()[name]

    @ray.remote
    class Actor:
        def __init__(self):
            self.c = Counter(name, tag_keys=("who",)).set_default_tags({"who": "actor"})

        def call(self):
            self.c.inc()
            return registry_snapshot()[name]

    assert ray.get(task.remote()).get((("who", "task"),), 0) >= 2
    a = Actor.remote()
    ray.get(a.call.remote())
    # An actor's worker runs only that actor: its count is exactly its calls.
    assert ray.get(a.call.remote()) == {(("who", "actor"),): 2.0}
    # The driver recorded none of it.
    assert name not in registry_snapshot()


@manta_only
def test_an_unsorted_histogram_counts_in_sorted_buckets(ray_start, metrics, registry_snapshot):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = metrics.Histogram(_name("unsorted"), boundaries=[10, 1])
    h.observe(5)
    hist = registry_snapshot()[h.info["name"]][()]
    assert (hist.boundaries, hist.bucket_counts) == ((1.0, 10.0), (0, 1, 0))
