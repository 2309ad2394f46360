"""`manta memory`'s view: what every node's store holds, joined with the
references every process holds, one row per object.

An object's state, from where its bytes are:
- PINNED: in a store's memory and read by some process now (a value from
  get() alive, which maps the store's bytes);
- IN_MEMORY: in a store's memory, nobody reading it;
- SPILLED: moved to disk by a store that needed room (read back on access);
- INLINE: small enough to live in its owner's memory, never in a store;
- LOST: a reference says it was in a store and no live store has it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

PINNED, IN_MEMORY, SPILLED, INLINE, LOST = "PINNED", "IN_MEMORY", "SPILLED", "INLINE", "LOST"


@dataclass(slots=True)
class ObjectRow:
    object_id: bytes
    state: str
    size: int
    where: str = ""  # the ip (and node) holding its bytes
    owner: str = ""  # "ip pid N" of the process that made it
    owner_pid: int = 0
    reference_types: str = ""


@dataclass(slots=True)
class NodeRow:
    node_id: bytes
    ip: str
    capacity: int
    used: int
    in_memory: int = 0
    pinned: int = 0
    spilled: int = 0
    spilled_bytes: int = 0


@dataclass(slots=True)
class MemoryView:
    nodes: list[NodeRow]
    objects: list[ObjectRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(o.state for o in self.objects))


def objects_view(stores: list[Any], processes: list[Any]) -> MemoryView:
    """`stores`: tool_messages.StoreReport per node; `processes`:
    state_messages.ProcessObjects per driver and worker."""
    nodes = []
    held: dict[bytes, list[tuple[Any, Any]]] = {}  # object -> [(store report, entry)]
    for r in stores:
        row = NodeRow(r.node_id, r.ip, r.capacity, r.used, spilled_bytes=r.spilled_bytes)
        for e in r.entries:
            held.setdefault(e.object_id, []).append((r, e))
            if e.spilled:
                row.spilled += 1
            else:
                row.in_memory += 1
                row.pinned += e.pins > 0
        nodes.append(row)
    refs: dict[bytes, list[tuple[Any, Any]]] = {}  # object -> [(process, ref)]
    for p in processes:
        for ref in p.refs:
            refs.setdefault(ref.object_id, []).append((p, ref))
    objects = []
    for oid in sorted(set(held) | set(refs)):
        places = held.get(oid, [])
        holders = refs.get(oid, [])
        in_memory = [(r, e) for r, e in places if not e.spilled]
        spilled = [(r, e) for r, e in places if e.spilled]
        pinned = any(e.pins > 0 for _, e in in_memory) or any(
            ref.reference_type == "PINNED_IN_MEMORY" for _, ref in holders)
        if in_memory:
            state = PINNED if pinned else IN_MEMORY
        elif spilled:
            state = SPILLED
        elif any(ref.in_store for _, ref in holders):
            state = LOST
        else:
            state = INLINE
        size = next((e.size for _, e in places), -1)
        if size < 0:
            size = next((ref.size for _, ref in holders if ref.size >= 0), -1)
        owners = [p for p, ref in holders if ref.owned]
        owner = owners[0] if owners else None
        if places:
            # The primary copy's node first: a copy pulled elsewhere is listed after it.
            places = sorted(places, key=lambda re: re[1].copy)
            where = ", ".join(dict.fromkeys(f"{r.ip} ({r.node_id.hex()[:8]})" for r, _ in places))
        elif owner is not None:
            where = f"{owner.ip} ({owner.node_id.hex()[:8]})"
        else:
            where = ""
        types = collections.Counter(ref.reference_type for _, ref in holders)
        objects.append(ObjectRow(
            object_id=oid, state=state, size=size, where=where,
            owner=f"{owner.ip} pid {owner.pid}{' (driver)' if owner.driver else ''}" if owner else "",
            owner_pid=owner.pid if owner else 0,
            reference_types=", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(types.items())),
        ))
    return MemoryView(nodes, objects)
