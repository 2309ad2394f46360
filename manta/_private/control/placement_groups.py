"""Placement group lifecycle, without I/O.

    PENDING --placed--> CREATED --a node holding bundles died--> RESCHEDULING
       |                   ^                                         |
       |                   +------------ lost bundles placed again --+
       +----------------- removed (by the user, or its job exiting) ---------> REMOVED

Every transition is listed in `_TRANSITIONS`; anything else is a bug and
raises `IllegalTransition`. Placing is two-phase I/O the head carries out
(prepare on every node, then commit); `plan()` decides where the bundles
go, and `placed()` takes the result only if nothing changed meanwhile
(each change bumps `generation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from manta._private.protocol import messages as m
from manta._private.scheduling.bundles import plan
from manta._private.scheduling.resources import ResourceSet, to_units

PENDING = m.PGStatus.PENDING
CREATED = m.PGStatus.CREATED
RESCHEDULING = m.PGStatus.RESCHEDULING
REMOVED = m.PGStatus.REMOVED

_TRANSITIONS = {
    (PENDING, CREATED),
    (PENDING, REMOVED),
    (CREATED, RESCHEDULING),
    (CREATED, REMOVED),
    (RESCHEDULING, CREATED),
    (RESCHEDULING, REMOVED),
}


class IllegalTransition(Exception):
    """An internal bug: the placement group table was asked for an impossible change."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a placement attempt puts bundles `indices`, node by node."""

    generation: int
    indices: list[int]
    nodes: list[bytes]  # one per index

    def by_node(self, bundles: list[dict[str, float]]) -> dict[bytes, list[tuple[int, dict[str, float]]]]:
        out: dict[bytes, list[tuple[int, dict[str, float]]]] = {}
        for i, nid in zip(self.indices, self.nodes):
            out.setdefault(nid, []).append((i, bundles[i]))
        return out


@dataclass(eq=False)
class PGEntry:
    spec: m.PlacementGroupSpec
    state: m.PGStatus = PENDING
    # The node of each bundle (b"" for one not placed yet).
    nodes: list[bytes] = field(default_factory=list)
    waiters: list[Any] = field(default_factory=list)
    error: str = ""
    # A placement attempt is in flight (its I/O is the head's).
    placing: bool = False
    generation: int = 0

    def move(self, new: m.PGStatus) -> None:
        if (self.state, new) not in _TRANSITIONS:
            raise IllegalTransition(f"placement group {self.spec.pg_id.hex()}: {self.state} -> {new}")
        self.state = new
        self.generation += 1

    def needs_placement(self) -> bool:
        return self.state in (PENDING, RESCHEDULING) and not self.placing

    def answers(self) -> bool:
        """Whether a WaitPlacementGroup can be answered now."""
        return self.state in (CREATED, REMOVED)

    def plan(self, free: Mapping[bytes, ResourceSet]) -> Plan | None:
        """Where to put the bundles that need a node, given the live nodes'
        free resources (in preference order); None if they do not fit now."""
        if self.state is RESCHEDULING:
            todo = [i for i, nid in enumerate(self.nodes) if nid not in free]
            kept = {nid for nid in self.nodes if nid in free}
        else:
            todo, kept = list(range(len(self.spec.bundles))), set()
        # STRICT_SPREAD: a lost bundle may not join a node that holds another.
        candidates = [
            (nid, res) for nid, res in free.items()
            if not (self.spec.strategy == "STRICT_SPREAD" and nid in kept)
        ]
        assignment = plan([to_units(self.spec.bundles[i]) for i in todo], self.spec.strategy, candidates)
        if assignment is None:
            return None  # tried again whenever resources change
        self.placing = True
        return Plan(self.generation, todo, assignment)

    def placed(self, p: Plan) -> bool:
        """Every node committed its bundles. False if the group changed
        meanwhile (removed, or another node died): the bundles must go back."""
        self.placing = False
        if p.generation != self.generation:
            return False
        nodes = list(self.nodes) or [b""] * len(self.spec.bundles)
        for i, nid in zip(p.indices, p.nodes):
            nodes[i] = nid
        self.nodes = nodes
        self.move(CREATED)
        return True

    def placement_failed(self) -> None:
        self.placing = False

    def node_died(self, node_id: bytes) -> bool:
        """A node died; True if it held bundles of this group (now to be placed again)."""
        if self.placing:
            self.generation += 1  # the attempt in flight may have picked it
        if self.state is CREATED and node_id in self.nodes:
            self.move(RESCHEDULING)
            return True
        return False

    def remove(self, why: str) -> bool:
        if self.state is REMOVED:
            return False
        self.move(REMOVED)
        self.error = why
        return True

    def validate(self) -> None:
        assert self.state in m.PGStatus, self.state
        if self.state is CREATED:
            assert len(self.nodes) == len(self.spec.bundles) and all(self.nodes), "created with bundles unplaced"
        if self.state is REMOVED:
            assert self.error, "removed without a reason"
