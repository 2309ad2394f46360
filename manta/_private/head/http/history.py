"""The head's recent metrics for the dashboard's charts, without I/O.

A bounded ring: one sample every `period_s` (5 s) for the last `keep_s`
(an hour), so charts need no external database. A sample holds levels
(CPU, memory, object store use) and rates: tasks and actors finished per
second since the sample before, worked out from cumulative totals the
caller reads off the head's tables. The clock is injected: `due()` and
`add()` take no time of their own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Totals:
    """What the cluster is at one moment: levels, and counts since the head started."""

    nodes: int = 0
    cpu_percent: float = 0.0  # machines' CPU use, averaged over the nodes
    cpus: float = 0.0  # logical CPUs
    cpus_used: float = 0.0
    mem_total: int = 0
    mem_used: int = 0
    store_capacity: int = 0
    store_used: int = 0
    spilled_bytes: int = 0
    busy_workers: int = 0  # workers holding a lease (running tasks or actors)
    alive_actors: int = 0
    tasks_finished: int = 0  # cumulative: FINISHED
    tasks_failed: int = 0  # cumulative: FAILED
    actors_dead: int = 0  # cumulative, as far as the head's table remembers


@dataclass(frozen=True, slots=True)
class Sample:
    time: float  # seconds since the epoch
    nodes: int
    cpu_percent: float
    cpus: float
    cpus_used: float
    mem_total: int
    mem_used: int
    store_capacity: int
    store_used: int
    spilled_bytes: int
    busy_workers: int
    alive_actors: int
    tasks_finished_per_s: float
    tasks_failed_per_s: float
    actors_finished_per_s: float

    def json(self) -> dict[str, float | int]:
        return asdict(self)


class History:
    def __init__(self, clock: Callable[[], float], period_s: float = 5.0, keep_s: float = 3600.0) -> None:
        if period_s <= 0 or keep_s < period_s:
            raise ValueError(f"a history needs 0 < period_s <= keep_s, not {period_s}, {keep_s}")
        self.clock = clock
        self.period_s = period_s
        self.keep_s = keep_s
        self.samples: deque[Sample] = deque(maxlen=math.ceil(keep_s / period_s))
        self._last: tuple[float, Totals] | None = None

    def due(self) -> bool:
        return self._last is None or self.clock() - self._last[0] >= self.period_s

    def next_at(self) -> float:
        return self.clock() if self._last is None else self._last[0] + self.period_s

    def add(self, totals: Totals) -> Sample | None:
        """Takes the cluster's totals now; returns the sample made (None for
        the first, which only sets where the rates start from)."""
        now = self.clock()
        last = self._last
        self._last = (now, totals)
        if last is None:
            return None
        then, before = last
        elapsed = now - then
        if elapsed <= 0:
            return None

        def rate(after: int, earlier: int) -> float:
            # A table that forgot entries (or a restart) must not chart negative rates.
            return max(0, after - earlier) / elapsed

        sample = Sample(
            time=now, nodes=totals.nodes, cpu_percent=totals.cpu_percent, cpus=totals.cpus,
            cpus_used=totals.cpus_used, mem_total=totals.mem_total, mem_used=totals.mem_used,
            store_capacity=totals.store_capacity, store_used=totals.store_used,
            spilled_bytes=totals.spilled_bytes, busy_workers=totals.busy_workers,
            alive_actors=totals.alive_actors,
            tasks_finished_per_s=rate(totals.tasks_finished, before.tasks_finished),
            tasks_failed_per_s=rate(totals.tasks_failed, before.tasks_failed),
            actors_finished_per_s=rate(totals.actors_dead, before.actors_dead),
        )
        self.samples.append(sample)
        return sample

    def since(self, t: float = 0.0) -> list[Sample]:
        """The samples after time `t` (all of them by default), oldest first."""
        return [s for s in self.samples if s.time > t]
