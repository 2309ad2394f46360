"""The placement group handle that tasks, actors and the executor pass around.

It lives below the public `manta.util.placement_group` (which creates and
removes groups) because the runtime itself rebuilds handles: a task whose
group captures its children runs inside it.
"""

from __future__ import annotations

from typing import Any

from manta._private.ids import PlacementGroupID
from manta._private.runtime import context


class PlacementGroup:
    def __init__(self, pg_id: bytes, bundles: list[dict[str, float]], strategy: str = "PACK") -> None:
        self.id = PlacementGroupID(pg_id)
        self.bundle_specs = bundles
        self.strategy = strategy

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> Any:
        """An ObjectRef that becomes ready once every bundle is reserved."""
        # A handle exists only in a process that made or received it, so
        # the runtime is there: no auto-init.
        return context.require().placement_group_ready(self)

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """True once the group is created, False if it is not within the
        timeout; a removed group raises (as in Ray), it never reads as ready."""
        rt = context.require()
        ref = self.ready()
        ready, _ = rt.wait([ref], 1, timeout_seconds, True)
        if ready:
            rt.get(ref)  # raises TaskPlacementGroupRemoved for a removed group
        return bool(ready)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()}, bundles={self.bundle_specs}, strategy={self.strategy})"

    def __reduce__(self) -> Any:
        return (PlacementGroup, (self.id._id, self.bundle_specs, self.strategy))
