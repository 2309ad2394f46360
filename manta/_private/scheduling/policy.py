"""Where a lease request should run, without I/O.

The default is Ray's hybrid policy in its simplest form: run on the local
node while it has the resources free; when it is busy, send the request to
another node that has them free (most free CPU first, so load spreads);
when none has, wait locally if the local node could ever run it, else go to
a node that could. A request nobody can ever satisfy waits locally, and the
caller is told why.

SPREAD takes every node that can run the work in turn; NODE_AFFINITY goes
to its node (or, if soft and it cannot, falls back to the default). The
agents use `place` (which knows its own node), the head `choose_node` for
actors; both share `spread`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        pick = spread(need, nodes, turn)
        if pick is None:
            return Decision(None, True)
        return LOCAL if pick.node_id == local.node_id else Decision(pick)
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


def spread(need: ResourceSet, nodes: Sequence[NodeView], turn: int) -> NodeView | None:
    """Round robin over every node that can run it at all; None if none can.

    Not only over the nodes that look free: what one node knows of the
    others' free resources trails by a report, so a burst right after
    other work ended would all go to whichever nodes looked free then.
    """
    choices = [n for n in nodes if fits(need, n.total)]
    return choices[turn % len(choices)] if choices else None


def choose_node(
    need: ResourceSet,
    nodes: Sequence[NodeView],
    *,
    kind: PlacementKind = PlacementKind.DEFAULT,
    target: bytes = b"",
    soft: bool = False,
    turn: int = 0,
) -> NodeView | None:
    """Where the head places an actor among the live `nodes` (in join order).

    There is no local node here: DEFAULT takes the first node with the
    resources free, else the first that has them at all (the lease waits
    there); None if no node has them. Raises Unschedulable for hard
    affinity to a node that is not alive.
    """
    if kind is PlacementKind.NODE_AFFINITY:
        node = next((n for n in nodes if n.node_id == target), None)
        if node is not None and (fits(need, node.total) or not soft):
            return node
        if not soft:
            raise Unschedulable(f"node {target.hex()} is not alive (hard node affinity)")
    if kind is PlacementKind.SPREAD:
        return spread(need, nodes, turn)
    return next((n for n in nodes if fits(need, n.available)), None) or next(
        (n for n in nodes if fits(need, n.total)), None
    )


NODE_ID_LABEL = "ray.io/node-id"


def node_labels(node_id: bytes, labels: Mapping[str, str]) -> dict[str, str]:
    """A node's labels with the one every node has (its id), as in Ray."""
    return {**labels, NODE_ID_LABEL: node_id.hex()}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Ray's label selectors: "v" equals, "!v" differs (or is absent),
    "in(a,b)" is one of, "!in(a,b)" is none of."""
    for key, want in selector.items():
        have = labels.get(key)
        negate = want.startswith("!")
        text = want[1:] if negate else want
        if text.startswith("in(") and text.endswith(")"):
            hit = have in {v.strip() for v in text[3:-1].split(",")}
        else:
            hit = have == text
        if hit == negate:
            return False
    return True
