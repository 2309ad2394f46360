"""Workers killed for memory, and what their owners are told: the agent's I/O around it.

Two things kill a worker for memory: the agent's memory monitor, when the
node passes its threshold (`memory.MemoryMonitor` decides which worker),
and the kernel, when a worker passes its cgroup's limit (`cgroups.py`).
Either way its task fails with OutOfMemoryError rather than as a crash:
the owner of each lease the worker held gets `LeaseKilled` with the
reason, whichever of the two (the agent or the owner) sees the death first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from manta._private.node.memory import Candidate, MemoryMonitor, memory_usage
from manta._private.node.roster import NODE_OUT_OF_MEMORY
from manta._private.protocol import messages as m
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.node.agent import GrantedLease, NodeAgent

log = logging.getLogger(__name__)


async def watch(agent: NodeAgent) -> None:
    """Kills a worker when node memory passes the threshold (`MemoryMonitor`
    decides), before the kernel's OOM killer takes something that matters more."""
    interval = agent.config.memory_monitor_ms / 1000
    monitor = MemoryMonitor(agent.config.memory_threshold)
    while not agent.stopping.is_set():
        await asyncio.sleep(interval)
        used, total = memory_usage()
        busy = {g.worker_id: (lid, g) for lid, g in agent.granted.items() if g.worker_id in agent.worker_pids}
        kill = monitor.check(
            agent.clock(), used, total,
            lambda: [Candidate(w, g.retriable, g.granted) for w, (_, g) in busy.items()],
            agent.worker_pids,
        )
        if kill is None:
            continue
        lease_id, lease = busy[kill.worker_id]
        log.warning("%s (lease %d, %s)", kill.reason, lease_id, "retriable" if lease.retriable else "not retriable")
        killed(agent, kill.worker_id, kill.reason)
        try:
            os.kill(agent.worker_pids[kill.worker_id], signal.SIGKILL)
        except (KeyError, ProcessLookupError):
            pass


def killed(agent: NodeAgent, worker_id: bytes, reason: str) -> None:
    """A worker killed for memory: the owners of its leases are told why."""
    agent.oom_killed[worker_id] = reason
    agent.roster.ending(worker_id, NODE_OUT_OF_MEMORY, reason)
    for lease_id, lease in agent.granted.items():
        if lease.worker_id == worker_id and not lease.for_actor and not lease.owner.closed:
            lease.owner.send(m.LeaseKilled(lease_id=lease_id, reason=reason))


def worker_gone(agent: NodeAgent, worker_id: bytes) -> None:
    """The agent saw a worker end: if its cgroup's limit killed it, its owners
    hear so (before its leases are dropped); then its cgroups go."""
    oom = agent.cgroups.oom_reason(worker_id)
    if oom and worker_id not in agent.oom_killed:
        killed(agent, worker_id, oom)
    agent.cgroups.remove(worker_id)


def lease_returned(agent: NodeAgent, owner: Connection, lease_id: int, lease: GrantedLease, kill: bool) -> None:
    """The owner saw the worker die before the agent did, and gave the lease
    back: if its cgroup's limit killed it, the owner hears so here."""
    oom = agent.cgroups.oom_reason(lease.worker_id) if kill else ""
    if oom and not lease.for_actor:
        owner.send(m.LeaseKilled(lease_id=lease_id, reason=oom))
