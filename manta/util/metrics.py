"""Application metrics with Ray's API (`ray.util.metrics`): Counter, Gauge, Histogram.

    requests = Counter("requests", "Requests served.", tag_keys=("route",))
    requests.set_default_tags({"route": "/"})
    requests.inc()                                  # route="/"
    requests.inc(2, tags={"route": "/api"})
    Histogram("latency_s", boundaries=[0.01, 0.1, 1]).observe(0.05)

They work in the driver, in tasks and in actors. Each value is recorded in
the registry of the process that records it (its runtime's `metrics`);
nothing is recorded before `init()` or after `shutdown()`. A metric is
known by its name, so a task that builds `Counter("x")` on every call adds
to one series. Tags passed that are not among the tag keys are ignored (a
series has the same labels throughout).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar, Self

from manta._private.runtime import context
from manta._private.runtime.metrics import MetricDefinition, MetricKind

# Prometheus's rule for metric names (":" is accepted, but Ray is phasing it out).
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class Metric:
    """What Counter, Gauge and Histogram share: name, tags and recording."""

    _kind: ClassVar[MetricKind]

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: tuple[str, ...] | None = None,
        *,
        _boundaries: tuple[float, ...] = (),
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a metric's name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("a metric needs a name: the empty string is not one")
        if not isinstance(description, str):
            raise TypeError(f"a metric's description must be a str, got {type(description).__name__}")
        keys = () if tag_keys is None else tag_keys
        if not isinstance(keys, tuple):
            raise TypeError(f"tag_keys must be a tuple of str, got {type(keys).__name__}")
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"every tag key must be a str, got {type(key).__name__} ({key!r})")
        # As in Ray: a name Prometheus would refuse is warned about once, and
        # the metric records nothing (the program goes on).
        self._discarded = _NAME.fullmatch(name) is None
        if self._discarded:
            warnings.warn(
                f"metric name {name!r} is not valid (letters, digits, '_' and ':' only, not starting "
                f"with a digit): nothing recorded with this metric is kept",
                UserWarning, stacklevel=3,
            )
        elif ":" in name:
            warnings.warn(
                f"metric name {name!r} contains ':', which Ray is phasing out of metric names; "
                f"use '_' instead",
                FutureWarning, stacklevel=3,
            )
        self._name = name
        self._description = description
        self._tag_keys: tuple[str, ...] = keys
        self._default_tags: dict[str, str] = {}
        self._definition = MetricDefinition(name, self._kind, description, keys, _boundaries)

    def set_default_tags(self, default_tags: dict[str, str]) -> Self:
        """Tags used by every record that does not pass its own; returns the
        metric itself, so it can follow the constructor."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"{key!r} is not one of this metric's tag keys {self._tag_keys}")
            if not isinstance(value, str):
                raise TypeError(f"tag values must be str, got {type(value).__name__} for {key!r}")
        self._default_tags = dict(default_tags)
        return self

    @property
    def info(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": self._default_tags,
        }

    def _record(self, value: float, tags: dict[str, str] | None) -> None:
        if self._discarded:
            return
        if tags:
            for key, tag in tags.items():
                if not isinstance(tag, str):
                    raise TypeError(f"tag values must be str, got {type(tag).__name__} for {key!r}")
            merged = {**self._default_tags, **tags}
        else:
            merged = self._default_tags
        missing = [k for k in self._tag_keys if k not in merged]
        if missing:
            raise ValueError(f"no value given for tag key(s) {', '.join(missing)} (in tags= or set_default_tags)")
        rt = context.current()
        if rt is not None:
            rt.metrics.record(self._definition, tuple(merged[k] for k in self._tag_keys), float(value))


def _check_number(value: Any) -> None:
    # bool is an int, and Ray takes it as one.
    if not isinstance(value, (int, float)):
        raise TypeError(f"a metric's value must be an int or a float, got {type(value).__name__}")


class Counter(Metric):
    """A total that only goes up (Prometheus's counter)."""

    _kind = MetricKind.COUNTER

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None) -> None:
        super().__init__(name, description, tag_keys)

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        """Adds `value` (positive; 1 by default) for these tags."""
        _check_number(value)
        if value <= 0:
            raise ValueError(f"a counter only goes up: inc() needs a value above 0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """A value that goes up and down: the last one set is kept (Prometheus's gauge)."""

    _kind = MetricKind.GAUGE

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None) -> None:
        super().__init__(name, description, tag_keys)

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        """Sets the gauge to `value` for these tags; None changes nothing (as in Ray)."""
        if value is None:
            return
        _check_number(value)
        self._record(value, tags)


class Histogram(Metric):
    """Counts of observed values in buckets, with their count and sum
    (Prometheus's histogram): e.g. latencies, for their quantiles."""

    _kind = MetricKind.HISTOGRAM

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: list[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        if not boundaries:
            raise ValueError(
                "a Histogram needs its bucket boundaries, e.g. Histogram('latency_s', boundaries=[0.1, 1, 10])"
            )
        for i, b in enumerate(boundaries):
            _check_number(b)
            if b <= 0:
                raise ValueError(f"histogram boundaries must be positive: boundaries[{i}] is {b} in {boundaries}")
        super().__init__(name, description, tag_keys, _boundaries=tuple(sorted(set(map(float, boundaries)))))
        self.boundaries = boundaries

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        """Counts `value` in its bucket, for these tags."""
        _check_number(value)
        self._record(value, tags)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": self.boundaries}


__all__ = ["Counter", "Gauge", "Histogram"]
