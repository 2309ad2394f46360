"""The application metrics of every process, as the head last heard them, without I/O.

Each process sends its whole snapshot (`MetricsReport`) when it changed;
the table keeps the latest per process, keyed by the principal that sent
it and the process's worker id, so no one can overwrite another job's
numbers. A process that exits keeps its last report (its counters do not
fall back), until `max_processes` is passed: then the one heard from
longest ago goes. `series()` merges the processes for /metrics: per tag
set and job, counters and histograms add up, a gauge is the value most
recently reported.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from manta._private.protocol.metrics_messages import MetricSeries, MetricsReport

log = logging.getLogger(__name__)

MAX_PROCESSES = 4096
# What one report may hold; past these it is cut, and the head says so once.
MAX_SERIES = 1000
MAX_POINTS = 10_000
KINDS = ("counter", "gauge", "histogram")


@dataclass
class Merged:
    """One metric across processes: its shape, and values by (job id, tag values)."""

    kind: str
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...]
    values: dict[tuple[int, tuple[str, ...]], float] = field(default_factory=dict)
    # Histograms: (bucket counts, count, sum) by the same key.
    histograms: dict[tuple[int, tuple[str, ...]], tuple[list[int], int, float]] = field(default_factory=dict)


class AppMetrics:
    def __init__(self, max_processes: int = MAX_PROCESSES) -> None:
        self.max_processes = max_processes
        self._latest: OrderedDict[tuple[str, bytes], MetricsReport] = OrderedDict()
        self._cut_said = False

    def __len__(self) -> int:
        return len(self._latest)

    def add(self, sender: str, report: MetricsReport) -> None:
        series = report.series
        if len(series) > MAX_SERIES or any(len(s.points) > MAX_POINTS for s in series):
            if not self._cut_said:
                log.warning("process %d reported over %d metrics or %d tag sets in one: the rest is left out",
                            report.pid, MAX_SERIES, MAX_POINTS)
                self._cut_said = True
            series = [MetricSeries(s.name, s.kind, s.description, s.tag_keys, s.boundaries, s.points[:MAX_POINTS])
                      for s in series[:MAX_SERIES]]
            report = MetricsReport(report.worker_id, report.job_id, report.node_id, report.pid, series)
        key = (sender, report.worker_id)
        self._latest.pop(key, None)
        self._latest[key] = report  # the newest last: gauges take the last one's value
        while len(self._latest) > self.max_processes:
            self._latest.popitem(last=False)

    def series(self) -> dict[str, Merged]:
        """Every metric, merged across processes. A name reported with two
        shapes keeps the one reported most recently."""
        out: dict[str, Merged] = {}
        for report in self._latest.values():
            for s in report.series:
                if s.kind not in KINDS:
                    continue
                shape = (s.kind, tuple(s.tag_keys), tuple(s.boundaries))
                merged = out.get(s.name)
                if merged is None or (merged.kind, merged.tag_keys, merged.boundaries) != shape:
                    merged = out[s.name] = Merged(s.kind, s.description, *shape[1:])
                n_buckets = len(merged.boundaries) + 1
                for p in s.points:
                    if len(p.tags) != len(merged.tag_keys):
                        continue  # a malformed point: not a series of this metric
                    key = (report.job_id, tuple(p.tags))
                    if s.kind == "histogram":
                        if len(p.buckets) != n_buckets:
                            continue
                        counts, count, total = merged.histograms.get(key, ([0] * n_buckets, 0, 0.0))
                        merged.histograms[key] = ([a + b for a, b in zip(counts, p.buckets)], count + p.count,
                                                  total + p.sum)
                    elif s.kind == "counter":
                        merged.values[key] = merged.values.get(key, 0.0) + p.value
                    else:
                        merged.values[key] = p.value
        return out
