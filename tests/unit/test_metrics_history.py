"""The head's metrics history ring (head/http/history.py) and its table of
application metrics (head/app_metrics.py), without processes."""

from __future__ import annotations

import pytest

from manta._private.head.app_metrics import AppMetrics
from manta._private.head.http.history import History, Totals
from manta._private.protocol.metrics_messages import MetricPoint, MetricSeries, MetricsReport


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_totals_set_the_start_then_each_period_gives_a_sample_with_rates() -> None:
    clock = Clock()
    h = History(clock, period_s=5, keep_s=60)
    assert h.due() and h.add(Totals(tasks_finished=100)) is None
    clock.now += 2
    assert not h.due() and h.next_at() == 1005.0
    clock.now += 3
    assert h.due()
    s = h.add(Totals(nodes=2, cpus=8, cpus_used=3, store_used=10, tasks_finished=150, tasks_failed=5,
                     actors_dead=1))
    assert s is not None and s.time == 1005.0 and s.nodes == 2 and s.cpus_used == 3 and s.store_used == 10
    assert s.tasks_finished_per_s == 10.0 and s.tasks_failed_per_s == 1.0 and s.actors_finished_per_s == 0.2
    assert h.since() == [s] and h.since(1005.0) == []


def test_a_table_that_forgot_entries_gives_no_negative_rate() -> None:
    clock = Clock()
    h = History(clock, period_s=1, keep_s=10)
    h.add(Totals(actors_dead=50))
    clock.now += 1
    s = h.add(Totals(actors_dead=10))
    assert s is not None and s.actors_finished_per_s == 0.0


def test_the_ring_keeps_only_the_last_keep_s() -> None:
    clock = Clock()
    h = History(clock, period_s=5, keep_s=60)
    for i in range(100):
        h.add(Totals(tasks_finished=i))
        clock.now += 5
    kept = h.since()
    assert len(kept) == 12 and kept[-1].time == 1_000.0 + 99 * 5 and kept[0].time == kept[-1].time - 55
    assert all(s.tasks_finished_per_s == pytest.approx(0.2) for s in kept)


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        History(Clock(), period_s=0)
    with pytest.raises(ValueError):
        History(Clock(), period_s=10, keep_s=5)


def report(worker: bytes, job: int, *series: MetricSeries) -> MetricsReport:
    return MetricsReport(worker_id=worker, job_id=job, node_id=b"n", pid=1, series=list(series))


def counter(value: float, kind: str = "a") -> MetricSeries:
    return MetricSeries("calls", "counter", "Calls.", ["kind"], [], [MetricPoint([kind], value=value)])


def test_counters_add_up_across_processes_and_a_report_replaces_its_process_last() -> None:
    t = AppMetrics()
    t.add("job 1", report(b"w1", 1, counter(2)))
    t.add("job 1", report(b"w2", 1, counter(3)))
    t.add("job 1", report(b"w1", 1, counter(5)))  # w1's total is now 5, not 2 + 5
    t.add("job 2", report(b"w3", 2, counter(7)))
    calls = t.series()["calls"]
    assert calls.kind == "counter" and calls.values == {(1, ("a",)): 8.0, (2, ("a",)): 7.0}


def test_a_sender_cannot_overwrite_another_principals_process() -> None:
    t = AppMetrics()
    t.add("job 1", report(b"w1", 1, counter(2)))
    t.add("job 9", report(b"w1", 1, counter(100)))  # same worker id, another principal: its own entry
    assert t.series()["calls"].values == {(1, ("a",)): 102.0} and len(t) == 2


def test_gauges_take_the_latest_report_and_histograms_add_bucketwise() -> None:
    t = AppMetrics()
    gauge = lambda v: MetricSeries("level", "gauge", "", [], [], [MetricPoint([], value=v)])  # noqa: E731
    hist = lambda b: MetricSeries("lat", "histogram", "", [], [0.1, 1.0],  # noqa: E731
                                  [MetricPoint([], buckets=b, count=sum(b), sum=1.5)])
    t.add("job 1", report(b"w1", 1, gauge(3), hist([1, 0, 2])))
    t.add("job 1", report(b"w2", 1, gauge(9), hist([0, 4, 0])))
    merged = t.series()
    assert merged["level"].values == {(1, ()): 9.0}
    assert merged["lat"].histograms == {(1, ()): ([1, 4, 2], 7, 3.0)}


def test_malformed_points_are_skipped_and_the_table_is_bounded() -> None:
    t = AppMetrics(max_processes=3)
    bad = MetricSeries("calls", "counter", "", ["kind"], [], [MetricPoint([], value=1), MetricPoint(["a"], value=1)])
    odd = MetricSeries("x", "summary", "", [], [], [MetricPoint([], value=1)])
    short = MetricSeries("lat", "histogram", "", [], [1.0], [MetricPoint([], buckets=[1])])
    t.add("job 1", report(b"w0", 1, bad, odd, short))
    merged = t.series()
    assert merged["calls"].values == {(1, ("a",)): 1.0} and "x" not in merged and merged["lat"].histograms == {}
    for i in range(1, 6):
        t.add("job 1", report(b"w%d" % i, 1, counter(1)))
    assert len(t) == 3 and t.series()["calls"].values == {(1, ("a",)): 3.0}
