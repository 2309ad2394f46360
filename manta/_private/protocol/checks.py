"""What values in a message must be, beyond their types: checked where they
enter, at the API and again where a peer's message arrives.

msgspec checks a message's shape (a resource map of str to float), but a
float may still be `inf`, `nan`, negative or absurdly large; a hostile peer
can send any of them. `problem(msg)` says what is wrong with one, so the
head and agents refuse it with a `ValueError` naming the resource, and go
on serving everyone else.
"""

from __future__ import annotations

import math
from typing import Any

from manta._private.protocol import messages as m
from manta._private.protocol.quantities import resources_problem as resources_problem


def _first(*maps: Any) -> str:
    for r in maps:
        why = resources_problem(r)
        if why:
            return why
    return ""


def _node(n: m.NodeInfo) -> str:
    return _first(n.resources, n.available, *(shape for shape, _ in n.pending))


def problem(msg: Any) -> str:
    """What is wrong with the resource quantities or times `msg` carries ("" if nothing)."""
    t = type(msg)
    if t is m.RequestLease:
        return _first(msg.resources, msg.must_be_free)
    if t is m.CreateActor:
        return _first(msg.spec.creation.resources, msg.spec.placing)
    if t is m.CreatePlacementGroup:
        return _first(*msg.spec.bundles)
    if t is m.NodeResources:
        return _first(msg.available, msg.total, *(shape for shape, _ in msg.pending))
    if t is m.RegisterNode:
        return _node(msg.node)
    if t is m.PrepareBundles:
        return _first(*(b for _, b in msg.bundles))
    if t is m.TaskEvents:
        # Times the state API turns into integers: an inf stored once would fail every
        # later list_tasks, everyone's (found by the fuzz run).
        isfinite = math.isfinite
        if not 0 <= msg.lost < 1 << 32 or not isfinite(msg.wall) or not all(isfinite(r.time) for r in msg.records) or not all(
            isfinite(r.started) and 0 <= r.job_id < 1 << 32 and 0 <= r.attempt < 1 << 31 for r in msg.running
        ):
            return "task records must carry finite times, and job ids and attempts in range"
        return ""
    if t is m.ClusterView:
        for n in msg.nodes:
            why = _node(n)
            if why:
                return why
    return ""
