"""The memory monitor: how full the node is, and whom to kill, when.

The agent reads `memory_usage()` every `memory_monitor_ms` and hands it to
`MemoryMonitor.check`; past the threshold that names a worker to kill
(`pick_victim`), before the kernel's OOM killer picks something that
matters more (the agent, the store, a driver). Time is passed in (the
agent's injected clock), so the decisions are tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

# How long a killed worker gets to die (and free its memory) before the
# monitor, still over the threshold, picks another.
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Candidate:
    worker_id: bytes
    retriable: bool  # its task (or actor) will be retried if killed
    started: float  # when its lease was granted


def pick_victim(candidates: list[Candidate]) -> Candidate | None:
    """Retriable work first, so that nothing is lost if it can be avoided;
    among those, the newest, which has done the least work so far."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.retriable, c.started))


@dataclass(frozen=True)
class Kill:
    worker_id: bytes
    reason: str


class MemoryMonitor:
    def __init__(self, threshold: float, grace_s: float = KILL_GRACE_S) -> None:
        self.threshold = threshold
        self.grace_s = grace_s
        # The last worker killed, and when: it may still be dying.
        self.pending: tuple[bytes, float] | None = None

    def check(
        self, now: float, used: int, total: int, busy: Callable[[], list[Candidate]], alive: Collection[bytes]
    ) -> Kill | None:
        """What to do about `used` of `total` bytes, given the workers running
        work (`busy()`, asked only when over the threshold) and those alive."""
        if used <= self.threshold * total:
            return None
        if self.pending is not None and self.pending[0] in alive and now - self.pending[1] < self.grace_s:
            return None  # the last one is still dying: its memory is not free yet
        victim = pick_victim(busy())
        if victim is None:
            return None
        self.pending = (victim.worker_id, now)
        return Kill(victim.worker_id, (
            f"the memory monitor killed its worker: node memory use {used / 2**30:.1f} of "
            f"{total / 2**30:.1f} GiB ({used / total:.0%}) passed the threshold "
            f"memory_usage_threshold={self.threshold:g}"
        ))

    def validate(self) -> None:
        assert 0 < self.threshold <= 1, self.threshold


def memory_usage() -> tuple[int, int]:
    """(used, total) bytes of this node: the machine's, or its cgroup's if tighter."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    total = info["MemTotal"]
    used = total - info.get("MemAvailable", info.get("MemFree", 0))
    cgroup = _cgroup_usage()
    if cgroup is not None and cgroup[0] / cgroup[1] > used / total:
        return cgroup
    return used, total


def _cgroup_usage() -> tuple[int, int] | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read())
        return current, int(limit)
    except (OSError, ValueError):
        return None
