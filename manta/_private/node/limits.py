"""What a worker's cgroup is set to: the decision, without files (`cgroups.py` writes them).

A worker is limited by the lease it runs: `memory` (bytes, Ray's resource)
becomes a hard memory limit, and `num_cpus` a CPU weight relative to the
node's other workers. A lease without `memory` runs with no limit of its
own (the node's limits still apply). The values are written in the words
of the cgroup version the node has:

    v2  memory.max, memory.swap.max, cpu.weight   (1..10000, 100 = one CPU)
    v1  memory.limit_in_bytes, memory.memsw.limit_in_bytes, cpu.shares
        (2..262144, 1024 = one CPU)

Swap is limited with memory: a worker over its limit is killed, not left
to page its overrun out to disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# One CPU in each version's unit.
V2_WEIGHT_PER_CPU = 100
V1_SHARES_PER_CPU = 1024
# A worker of a 0-CPU lease (an actor's default) still gets a tenth of a
# CPU's weight: under contention it runs slowly rather than not at all.
MIN_CPUS = 0.1
V2_WEIGHT_RANGE = (1, 10_000)
V1_SHARES_RANGE = (2, 262_144)
# A worker's runtime alone takes some tens of MiB: a limit below this would
# kill it before its task ran. Ray programs pass small `memory` values as
# scheduling tokens, so such a lease is limited to this floor instead.
MIN_MEMORY = 128 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int | None  # bytes; None: no limit of the worker's own
    cpus: float


# A worker between leases: no memory limit, one CPU's weight.
IDLE = Limits(memory=None, cpus=1.0)


def limits_of(resources: Mapping[str, float]) -> Limits:
    """The limits of a lease asking for `resources` (Ray's names: CPU, memory)."""
    memory = resources.get("memory", 0.0)
    return Limits(memory=max(int(memory), MIN_MEMORY) if memory > 0 else None, cpus=float(resources.get("CPU", 0.0)))


def _clamp(value: float, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], round(value)))


Writes = list[tuple[str, str]]


def v2_files(limits: Limits) -> Writes:
    """(file, value) to write in a worker's cgroup v2 directory, in order."""
    return [
        ("memory.max", "max" if limits.memory is None else str(limits.memory)),
        ("memory.swap.max", "max" if limits.memory is None else "0"),
        ("cpu.weight", str(_clamp(max(limits.cpus, MIN_CPUS) * V2_WEIGHT_PER_CPU, V2_WEIGHT_RANGE))),
    ]


def v1_files(limits: Limits) -> dict[str, Writes]:
    """Controller -> (file, value) to write in a worker's cgroup v1 directories, in order.

    The memory+swap limit may never be below the memory limit, so it is
    lifted first, then both are set.
    """
    memory = "-1" if limits.memory is None else str(limits.memory)
    return {
        "memory": [
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", memory),
            ("memory.memsw.limit_in_bytes", memory),
        ],
        "cpu": [("cpu.shares", str(_clamp(max(limits.cpus, MIN_CPUS) * V1_SHARES_PER_CPU, V1_SHARES_RANGE)))],
    }


def oom_kills(events: str) -> int:
    """The `oom_kill` count of a memory.events (v2) or memory.oom_control (v1) file."""
    for line in events.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
