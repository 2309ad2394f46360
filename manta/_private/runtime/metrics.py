"""Application metrics recorded in this process, without I/O.

Every runtime (a driver's, a worker's, local mode's) holds one
`MetricsRegistry`; `manta.util.metrics` records into the registry of the
process it runs in. A metric is known by its name: every `Counter("x")` made
in a process adds to the same series, however many objects were built.
Values are kept per tag set, in the shape Prometheus exports them (a
later exporter reads `snapshot()` and `definitions()`):

    counter     the running total of what was added
    gauge       the last value set
    histogram   a count per bucket (value <= boundary, then +Inf), the count
                and the sum of what was observed
"""

from __future__ import annotations

import bisect
import enum
import threading
import warnings
from dataclasses import dataclass

# One tag set, as (key, value) pairs in the metric's tag_keys order.
TagSet = tuple[tuple[str, str], ...]


class MetricKind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    kind: MetricKind
    description: str
    tag_keys: tuple[str, ...]
    # Histograms only: sorted and without repeats (the user's list may be neither).
    boundaries: tuple[float, ...] = ()

    def same_series(self, other: MetricDefinition) -> bool:
        """Whether values recorded under `other` belong with this one's (a
        description may differ: it does not change what a value means)."""
        return (self.kind, self.tag_keys, self.boundaries) == (other.kind, other.tag_keys, other.boundaries)


@dataclass(frozen=True, slots=True)
class HistogramValue:
    boundaries: tuple[float, ...]
    # One per boundary (values up to it, above the one before), then +Inf.
    bucket_counts: tuple[int, ...]
    count: int
    sum: float


class _Histogram:
    __slots__ = ("counts", "count", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0


class MetricsRegistry:
    """The current values of this process's metrics. Thread-safe: threaded
    actors record from several threads at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._definitions: dict[str, MetricDefinition] = {}
        # By name, then by tag values: counters' and gauges' numbers, histograms' buckets.
        self._scalars: dict[str, dict[tuple[str, ...], float]] = {}
        self._histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {}
        # Bumped by every record: a reporter sends only when it moved.
        self.version = 0

    def record(self, definition: MetricDefinition, tag_values: tuple[str, ...], value: float) -> None:
        """Adds (counter), sets (gauge) or observes (histogram) `value` for
        the tag set `tag_values` (in the definition's tag_keys order)."""
        name = definition.name
        with self._lock:
            self.version += 1
            known = self._definitions.get(name)
            if known is not definition and (known is None or not known.same_series(definition)):
                self._declare(known, definition)
            kind = definition.kind
            if kind is MetricKind.COUNTER:
                scalars = self._scalars[name]
                scalars[tag_values] = scalars.get(tag_values, 0.0) + value
            elif kind is MetricKind.GAUGE:
                self._scalars[name][tag_values] = value
            else:
                histograms = self._histograms[name]
                cell = histograms.get(tag_values)
                if cell is None:
                    cell = histograms[tag_values] = _Histogram(len(definition.boundaries) + 1)
                cell.counts[bisect.bisect_left(definition.boundaries, value)] += 1
                cell.count += 1
                cell.sum += value

    def _declare(self, known: MetricDefinition | None, definition: MetricDefinition) -> None:
        if known is not None:
            # Two metrics of one name and different shapes cannot both be
            # exported: the newer one wins, and says so.
            warnings.warn(
                f"metric {definition.name!r} was declared again as a {definition.kind} with tag keys "
                f"{definition.tag_keys} (it was a {known.kind} with tag keys {known.tag_keys}): "
                f"its values so far are dropped",
                UserWarning, stacklevel=4,
            )
        self._definitions[definition.name] = definition
        self._scalars.pop(definition.name, None)
        self._histograms.pop(definition.name, None)
        if definition.kind is MetricKind.HISTOGRAM:
            self._histograms[definition.name] = {}
        else:
            self._scalars[definition.name] = {}

    def snapshot(self) -> dict[str, dict[TagSet, float | HistogramValue]]:
        """Every metric's current values, by name, then by tag set: a copy,
        unchanged by what is recorded after."""
        out: dict[str, dict[TagSet, float | HistogramValue]] = {}
        with self._lock:
            for name, definition in self._definitions.items():
                keys = definition.tag_keys
                values: dict[TagSet, float | HistogramValue] = {}
                for tag_values, number in self._scalars.get(name, {}).items():
                    values[tuple(zip(keys, tag_values))] = number
                for tag_values, cell in self._histograms.get(name, {}).items():
                    values[tuple(zip(keys, tag_values))] = HistogramValue(
                        definition.boundaries, tuple(cell.counts), cell.count, cell.sum
                    )
                out[name] = values
        return out

    def definitions(self) -> dict[str, MetricDefinition]:
        """What each recorded metric is (its kind, description, tag keys, buckets)."""
        with self._lock:
            return dict(self._definitions)
