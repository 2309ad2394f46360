"""When an agent tells the head its free resources, without I/O.

Soon after a change (changes within `coalesce_s` go in one report), and at
least every `heartbeat_s` even if nothing changed: the head takes the
report as the node's sign of life. Time is whatever the caller passes in.
"""

from __future__ import annotations

import math


class ReportSchedule:
    def __init__(self, heartbeat_s: float, coalesce_s: float = 0.05) -> None:
        self.heartbeat_s = heartbeat_s
        self.coalesce_s = coalesce_s
        self.last_sent = -math.inf
        # A change not reported yet: report at this time.
        self.change_at: float | None = None

    def changed(self, now: float) -> bool:
        """Something changed; True if a report is newly due sooner than planned."""
        if self.change_at is not None:
            return False  # already coming
        self.change_at = now + self.coalesce_s
        return self.change_at < self.last_sent + self.heartbeat_s

    def due(self, now: float) -> bool:
        return (self.change_at is not None and now >= self.change_at) or now >= self.last_sent + self.heartbeat_s

    def sent(self, now: float) -> None:
        self.last_sent = now
        self.change_at = None

    def next_at(self) -> float:
        beat = self.last_sent + self.heartbeat_s
        return beat if self.change_at is None else min(beat, self.change_at)

    def validate(self) -> None:
        assert self.heartbeat_s > 0 and self.coalesce_s >= 0
        assert self.change_at is None or self.change_at >= self.last_sent
