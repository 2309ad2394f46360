"""Which nodes are alive, from their heartbeats, without I/O.

Agents report to the head every `heartbeat_s` whether anything changed or
not. A node not heard from for `timeout` seconds is dead: crashed, hung or
cut off. Time is whatever the caller passes in (the head's injected clock).
"""

from __future__ import annotations


class NodeLiveness:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last_seen: dict[bytes, float] = {}

    def beat(self, node_id: bytes, now: float) -> None:
        self.last_seen[node_id] = now

    def forget(self, node_id: bytes) -> None:
        self.last_seen.pop(node_id, None)

    def expired(self, now: float) -> list[bytes]:
        """Nodes silent for longer than the timeout; each is reported once."""
        dead = [nid for nid, seen in self.last_seen.items() if now - seen > self.timeout]
        for nid in dead:
            del self.last_seen[nid]
        return dead

    def check_every(self) -> float:
        """How often to call `expired`: a death is seen within a quarter of the timeout."""
        return min(0.25, self.timeout / 4)

    def validate(self) -> None:
        assert self.timeout > 0, self.timeout
