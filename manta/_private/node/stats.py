"""A node's numbers for the head's /metrics (`GetNodeStats`): read from the
agent's own tables when asked, plus the bytes it moved between nodes,
counted as chunks go by."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psutil

from manta._private.protocol import metrics_messages as mm

if TYPE_CHECKING:
    from manta._private.node.agent import NodeAgent


class TransferCounters:
    """Object bytes this node pulled from others, and others read from it."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0

    def send(self, conn: Any, rid: int, data: memoryview, tag: bytes) -> None:
        """Sends one chunk to a peer that reads it (`Connection.send_chunk`), counted."""
        self.sent += len(data)
        conn.send_chunk(rid, data, tag)


def node_stats(agent: NodeAgent, transfers: TransferCounters) -> mm.NodeStats:
    store = agent.store
    leases = agent.leases
    mem = psutil.virtual_memory()
    alive = agent.roster.alive.values()
    drivers = sum(1 for p in alive if p.driver)
    return mm.NodeStats(
        node_id=agent.node_id,
        store_capacity=store.capacity,
        store_used=store.used,
        store_objects=len(store.objects),
        spilled_bytes=sum(store.spilled.values()),
        spilled_objects=len(store.spilled),
        # Since the previous call (the head's previous ask): no waiting here.
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        cpu_count=psutil.cpu_count() or 0,
        mem_total=int(mem.total),
        mem_used=int(mem.total - mem.available),
        mem_available=int(mem.available),
        workers=len(leases.workers),
        idle_workers=sum(len(v) for v in leases.idle.values()),
        leased_workers=len(leases.leases),
        drivers=drivers,
        pending_leases=len(leases.pending),
        received_bytes=transfers.received,
        sent_bytes=transfers.sent,
    )
