"""Placement groups, with Ray's API: reserve bundles of resources across nodes
atomically, then run tasks and actors inside them."""

from __future__ import annotations

import warnings
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.protocol.quantities import resources_problem
from manta._private.runtime.context import current_task
from manta._private.runtime.placement_group import PlacementGroup
from manta._private.scheduling.bundles import STRATEGIES
from manta._private.session import runtime as _runtime


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, list) or not bundles:
        raise ValueError("placement_group() needs a non-empty list of bundles (dicts of resources)")
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict) or not b:
            raise ValueError(f"bundle {i} must be a non-empty dict of resources, got {b!r}")
        clean: dict[str, float] = {}
        for k, v in b.items():
            if k == "bundle":
                raise ValueError(f"bundle {i}: 'bundle' is a name placement groups reserve for themselves")
            why = resources_problem({k: v})
            if why:
                raise ValueError(f"bundle {i}: {why}")
            clean[k] = float(v)
        if not any(clean.values()):
            raise ValueError(f"bundle {i} asks for no resources at all: {b!r}")
        out.append(clean)
    return out


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: Any = None,
) -> PlacementGroup:
    clean = _check_bundles(bundles)
    if any("object_store_memory" in b for b in clean):
        # The store is shared by every process on a node; a reservation of it
        # per bundle is not enforced (Ray deprecates it for the same reason).
        warnings.warn("Setting 'object_store_memory' for bundles is deprecated: the object store "
                      "is shared by the whole node and a bundle's share of it is not reserved",
                      DeprecationWarning, stacklevel=2)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    rt = _runtime()
    spec = m.PlacementGroupSpec(
        pg_id=ids.new_placement_group_id(), bundles=clean, strategy=strategy, name=name or "",
        namespace=rt.namespace, job_id=rt.job_id, detached=lifetime == "detached",
    )
    rt.call_head(m.CreatePlacementGroup(spec=spec))
    return PlacementGroup(spec.pg_id, clean, strategy)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() expects a PlacementGroup, got {type(placement_group).__name__}")
    rt = _runtime()
    rt.call_head(m.RemovePlacementGroup(pg_id=placement_group.id._id))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    rt = _runtime()
    reply = rt.call_head(m.GetPlacementGroups(name=placement_group_name, namespace=rt.namespace))
    if not reply.groups:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    spec = reply.groups[0].spec
    return PlacementGroup(spec.pg_id, spec.bundles, spec.strategy)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    rt = _runtime()
    reply = rt.call_head(m.GetPlacementGroups())
    table = {}
    for g in reply.groups:
        table[g.spec.pg_id.hex()] = {
            "placement_group_id": g.spec.pg_id.hex(),
            "name": g.spec.name,
            "strategy": g.spec.strategy,
            "state": g.state,
            "bundles": dict(enumerate(g.spec.bundles)),
            "bundles_to_node_id": {i: n.hex() for i, n in enumerate(g.nodes)},
        }
    if placement_group is not None:
        return table.get(placement_group.id.hex(), {})
    return table


def get_current_placement_group() -> PlacementGroup | None:
    ctx = current_task.get()
    pg = getattr(ctx, "placement_group", None) if ctx is not None else None
    return pg  # type: ignore[no-any-return]


__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
