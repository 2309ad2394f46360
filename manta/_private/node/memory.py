"""The memory monitor's two halves: how full the node is, and whom to kill.

The agent asks `memory_usage()` every few hundred milliseconds; past the
threshold it kills the worker `pick_victim` names, before the kernel's OOM
killer picks something that matters more (the agent, the store, a driver).
"""

from __future__ import annotations

from dataclasses import dataclass


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
