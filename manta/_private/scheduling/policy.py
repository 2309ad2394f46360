"""Where a lease request should run, without I/O.

The default is Ray's hybrid policy in its simplest form: run on the local
node while it has the resources free; when it is busy, send the request to
another node that has them free (most free CPU first, so load spreads);
when none has, wait locally if the local node could ever run it, else go to
a node that could. A request nobody can ever satisfy waits locally, and the
caller is told why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from manta._private.scheduling.resources import ResourceSet, fits


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: bytes
    address: str
    total: ResourceSet
    available: ResourceSet


@dataclass(frozen=True, slots=True)
class Decision:
    node: NodeView | None  # None: this node
    infeasible: bool = False


LOCAL = Decision(None)


def place(
    need: ResourceSet,
    local: NodeView,
    others: Mapping[bytes, NodeView],
    *,
    may_spill: bool = True,
) -> Decision:
    if fits(need, local.available) or not may_spill:
        return LOCAL if fits(need, local.total) or not may_spill else Decision(None, True)
    peers = [n for n in others.values() if n.node_id != local.node_id]
    free = [n for n in peers if fits(need, n.available)]
    if free:
        return Decision(max(free, key=lambda n: (n.available.get("CPU", 0), n.node_id)))
    if fits(need, local.total):
        return LOCAL
    able = [n for n in peers if fits(need, n.total)]
    if able:
        return Decision(max(able, key=lambda n: (n.available.get("CPU", 0), n.node_id)))
    return Decision(None, True)
