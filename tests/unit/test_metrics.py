"""The metrics registry and manta.util.metrics, without processes."""

from __future__ import annotations

import pickle
import types
import warnings

import pytest

from manta._private.runtime import context
from manta._private.runtime.metrics import HistogramValue, MetricDefinition, MetricKind, MetricsRegistry
from manta.util.metrics import Counter, Gauge, Histogram


def _def(name: str, kind: MetricKind, keys: tuple[str, ...] = (), bounds: tuple[float, ...] = ()) -> MetricDefinition:
    return MetricDefinition(name, kind, "", keys, bounds)


def test_counters_add_gauges_keep_the_last_value_per_tag_set():
    reg = MetricsRegistry()
    c = _def("c", MetricKind.COUNTER, ("k",))
    g = _def("g", MetricKind.GAUGE)
    reg.record(c, ("a",), 1.0)
    reg.record(c, ("a",), 2.5)
    reg.record(c, ("b",), 1.0)
    reg.record(g, (), 5.0)
    reg.record(g, (), -2.0)
    assert reg.snapshot() == {"c": {(("k", "a"),): 3.5, (("k", "b"),): 1.0}, "g": {(): -2.0}}


def test_histogram_buckets_are_upper_bounds_then_inf():
    reg = MetricsRegistry()
    h = _def("h", MetricKind.HISTOGRAM, (), (1.0, 10.0))
    for v in (0.5, 1.0, 3.0, 10.0, 11.0, 100.0):
        reg.record(h, (), v)
    assert reg.snapshot()["h"][()] == HistogramValue((1.0, 10.0), (2, 2, 2), 6, 125.5)


def test_a_snapshot_is_a_copy():
    reg = MetricsRegistry()
    c = _def("c", MetricKind.COUNTER)
    reg.record(c, (), 1.0)
    snap = reg.snapshot()
    reg.record(c, (), 1.0)
    assert snap == {"c": {(): 1.0}}
    assert reg.snapshot() == {"c": {(): 2.0}}


def test_one_name_is_one_series_across_definitions_of_the_same_shape():
    reg = MetricsRegistry()
    reg.record(MetricDefinition("c", MetricKind.COUNTER, "one", ()), (), 1.0)
    reg.record(MetricDefinition("c", MetricKind.COUNTER, "two", ()), (), 1.0)
    assert reg.snapshot() == {"c": {(): 2.0}}


def test_a_name_declared_again_with_another_shape_starts_over_and_warns():
    reg = MetricsRegistry()
    reg.record(_def("x", MetricKind.COUNTER), (), 3.0)
    with pytest.warns(UserWarning, match="declared again"):
        reg.record(_def("x", MetricKind.GAUGE), (), 1.0)
    assert reg.snapshot() == {"x": {(): 1.0}}
    assert reg.definitions()["x"].kind is MetricKind.GAUGE


# -- the public classes --------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> MetricsRegistry:
    """A stand-in runtime in the slot, holding only a registry."""
    reg = MetricsRegistry()
    monkeypatch.setattr(context, "_runtime", types.SimpleNamespace(metrics=reg))
    return reg


def test_default_tags_and_passed_tags_merge(registry):
    c = Counter("requests", tag_keys=("route", "code")).set_default_tags({"route": "/", "code": "200"})
    c.inc()
    c.inc(2, tags={"code": "500"})
    c.inc(tags={"route": "/x", "unknown": "ignored"})
    assert registry.snapshot()["requests"] == {
        (("route", "/"), ("code", "200")): 1.0,
        (("route", "/"), ("code", "500")): 2.0,
        (("route", "/x"), ("code", "200")): 1.0,
    }


def test_gauge_none_records_nothing_and_histogram_sorts_its_boundaries(registry):
    g = Gauge("g")
    g.set(None)
    assert "g" not in registry.snapshot()
    h = Histogram("h", boundaries=[10, 1])
    h.observe(5)
    assert h.info["boundaries"] == [10, 1]
    assert registry.snapshot()["h"][()] == HistogramValue((1.0, 10.0), (0, 1, 0), 1, 5.0)


def test_an_invalid_name_warns_and_records_nothing(registry):
    with pytest.warns(UserWarning):
        c = Counter("1st")
    c.inc()
    assert registry.snapshot() == {}
    with pytest.warns(FutureWarning):
        Counter("a:b")


def test_nothing_is_recorded_without_a_runtime(monkeypatch):
    monkeypatch.setattr(context, "_runtime", None)
    Counter("c").inc()  # no error, nowhere to go


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: Counter(""), ValueError),
        (lambda: Counter(3), TypeError),
        (lambda: Counter("c", tag_keys=["k"]), TypeError),
        (lambda: Counter("c", tag_keys=(1,)), TypeError),
        (lambda: Counter("c", tag_keys=("k",)).set_default_tags({"z": "v"}), ValueError),
        (lambda: Counter("c", tag_keys=("k",)).set_default_tags({"k": 1}), TypeError),
        (lambda: Counter("c", tag_keys=("k",)).inc(), ValueError),
        (lambda: Counter("c", tag_keys=("k",)).inc(tags={"k": 1}), TypeError),
        (lambda: Counter("c").inc(0), ValueError),
        (lambda: Counter("c").inc(-1), ValueError),
        (lambda: Counter("c").inc("1"), TypeError),
        (lambda: Gauge("g").set("1"), TypeError),
        (lambda: Histogram("h"), ValueError),
        (lambda: Histogram("h", boundaries=[]), ValueError),
        (lambda: Histogram("h", boundaries=[1, 0]), ValueError),
        (lambda: Histogram("h", boundaries=["a"]), TypeError),
        (lambda: Histogram("h", boundaries=[1]).observe(None), TypeError),
    ],
)
def test_validation_errors(registry, make, error):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error):
            make()


def test_a_metric_pickles_with_its_default_tags(registry):
    c = Counter("c", "d", tag_keys=("k",)).set_default_tags({"k": "v"})
    copy = pickle.loads(pickle.dumps(c))
    assert copy.info == {"name": "c", "description": "d", "tag_keys": ("k",), "default_tags": {"k": "v"}}
    copy.inc()
    assert registry.snapshot() == {"c": {(("k", "v"),): 1.0}}


def test_each_task_that_counted_reports_before_its_answer_even_right_after_another():
    # A job's workers are killed as it ends: a report held back to space
    # reports out would be lost with the last task's counts.
    from manta._private.runtime.task_events import TaskReporter

    sent: list[object] = []
    rt = types.SimpleNamespace(metrics=MetricsRegistry(), post=lambda fn: fn(), send_head=sent.append,
                               worker_id=b"w", job_id=b"j", node_id=b"n")
    reporter = TaskReporter(rt, interval=0)  # type: ignore[arg-type]
    counter = _def("calls", MetricKind.COUNTER)
    for expected in (1.0, 2.0, 3.0):
        rt.metrics.record(counter, (), 1.0)
        reporter.task_ended()
        assert sent[-1].series[0].points[0].value == expected  # type: ignore[attr-defined]
    reporter.task_ended()  # nothing new recorded: nothing sent
    assert len(sent) == 3
