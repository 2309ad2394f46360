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

from manta._private.protocol.messages import PlacementKind
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


class Unschedulable(Exception):
    """A hard constraint no node in the cluster can meet."""


def place(
    need: ResourceSet,
    local: NodeView,
    others: Mapping[bytes, NodeView],
    *,
    may_spill: bool = True,
    kind: PlacementKind = PlacementKind.DEFAULT,
    target: bytes = b"",
    soft: bool = False,
    turn: int = 0,
) -> Decision:
    """Where to run; raises Unschedulable for hard affinity to a node that is gone.

    `turn` is a counter the caller advances per SPREAD request (round robin).
    """
    if kind is PlacementKind.NODE_AFFINITY:
        if target == local.node_id:
            if fits(need, local.total) or not soft:
                return LOCAL
        elif target in others:
            node = others[target]
            if fits(need, node.total) or not soft:
                return Decision(node) if may_spill else LOCAL
        elif not soft:
            raise Unschedulable(f"node {target.hex()} is not in the cluster (hard node affinity)")
        # Soft affinity that cannot be met: the default policy decides.
    if kind is PlacementKind.SPREAD and may_spill:
        nodes = sorted([local, *(n for n in others.values() if n.node_id != local.node_id)],
                       key=lambda n: n.node_id)
        free = [n for n in nodes if fits(need, n.available)] or [n for n in nodes if fits(need, n.total)]
        if free:
            pick = free[turn % len(free)]
            return LOCAL if pick.node_id == local.node_id else Decision(pick)
        return Decision(None, True)
    if not may_spill:
        # Sent here by another node: stay, unless this node can never run it
        # (its view was stale); then wait until the cluster changes.
        return LOCAL if fits(need, local.total) else Decision(None, True)
    if fits(need, local.available):
        return LOCAL
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
