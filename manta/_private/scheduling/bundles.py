"""Placing a placement group's bundles on nodes, without I/O.

A plan maps every bundle to a node, or is None when the group cannot be
placed now; the head then reserves all bundles or none (two phases), and
tries again when resources change.

    STRICT_PACK    all bundles on one node
    PACK           as few nodes as possible (one if it fits)
    STRICT_SPREAD  every bundle on a different node
    SPREAD         bundles spread over nodes, several per node only if needed
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from manta._private.scheduling.resources import ResourceSet, add, fits, subtract

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def plan(
    bundles: Sequence[ResourceSet],
    strategy: str,
    nodes: Sequence[tuple[bytes, ResourceSet]],
) -> list[bytes] | None:
    """`nodes` are (node_id, free resources) in preference order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    free = {nid: dict(res) for nid, res in nodes}
    order = [nid for nid, _ in nodes]
    if strategy in ("STRICT_PACK", "PACK"):
        total: ResourceSet = {}
        for b in bundles:
            add(total, b)
        for nid in order:
            if fits(total, free[nid]):
                return [nid] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
        return _greedy(bundles, order, free, prefer_same=True)
    if strategy == "STRICT_SPREAD":
        out: list[bytes] = []
        used: set[bytes] = set()
        for b in bundles:
            found = next((n for n in order if n not in used and fits(b, free[n])), None)
            if found is None:
                return None
            used.add(found)
            subtract(free[found], b)
            out.append(found)
        return out
    return _greedy(bundles, order, free, prefer_same=False)


def _greedy(
    bundles: Sequence[ResourceSet], order: list[bytes], free: dict[bytes, ResourceSet], *, prefer_same: bool
) -> list[bytes] | None:
    out: list[bytes] = []
    for i, b in enumerate(bundles):
        if prefer_same:
            candidates = order
        else:
            # Start from the next node each time, so bundles spread.
            k = i % len(order) if order else 0
            candidates = order[k:] + order[:k]
            unused = [n for n in candidates if n not in out]
            candidates = unused + [n for n in candidates if n in out]
        nid = next((n for n in candidates if fits(b, free[n])), None)
        if nid is None:
            return None
        subtract(free[nid], b)
        out.append(nid)
    return out


def bundle_resource(name: str, pg_id: bytes, index: int | None) -> str:
    """The resource a task asks for to run in a bundle (Ray's naming)."""
    if index is None or index < 0:
        return f"{name}_group_{pg_id.hex()}"
    return f"{name}_group_{index}_{pg_id.hex()}"


def _parse(name: str) -> tuple[str, bytes] | None:
    """(resource, group id) of a name bundle_resource made, else None (a
    resource of the user's own that may read alike)."""
    parsed = _parse_indexed(name)
    return None if parsed is None else (parsed[0], parsed[2])


def _parse_indexed(name: str) -> tuple[str, int | None, bytes] | None:
    """(resource, bundle index or None for the group's wildcard, group id)."""
    base, sep, tail = name.rpartition("_group_")
    index, _, pg_hex = tail.rpartition("_")
    if not sep or len(pg_hex) != 36 or any(c not in "0123456789abcdef" for c in pg_hex):
        return None
    if index and not index.isdigit():
        return None
    return base, int(index) if index else None, bytes.fromhex(pg_hex)


def charge(request: ResourceSet, free: Mapping[str, int], gate: ResourceSet | None = None) -> ResourceSet | None:
    """What `request` takes of a node's `free` resources, or None if it
    does not fit now (`gate` must be free too, but is not taken).

    Bundles are counted as Ray counts them: work in bundle i takes the
    group's wildcard names too, and work in any bundle (index -1) takes,
    for each resource, that resource's name in one bundle with room for it
    (the first here; Ray, too, may take the CPU from one bundle and a custom
    resource from another). Taking only the one name it asks for let work
    in bundle i and work in any bundle both use the same room: a bundle ran
    more than it holds."""
    need = dict(request)
    if gate:
        add(need, gate)
    if not any("_group_" in name for name in need):
        return request if fits(need, free) else None  # the usual case: no bundle
    taken = dict(request)
    for name, amount in need.items():
        parsed = _parse_indexed(name)
        if parsed is None:
            if free.get(name, 0) < amount:
                return None
            continue
        base, index, pg_id = parsed
        if index is not None:
            other = bundle_resource(base, pg_id, None)
            if free.get(name, 0) < amount or free.get(other, 0) < need.get(other, 0) + amount:
                return None
        else:
            room = [n for n in _bundle_names_of(base, pg_id, free) if free[n] >= amount]
            if not room or free.get(name, 0) < amount:
                return None
            other = room[0]
        if name in request:
            add(taken, {other: request[name]})
    return taken


def _bundle_names_of(base: str, pg_id: bytes, free: Mapping[str, int]) -> list[str]:
    """`base`'s name in each of the group's bundles here, by index."""
    names = [(p[1], n) for n in free if (p := _parse_indexed(n)) is not None
             and p[0] == base and p[2] == pg_id and p[1] is not None]
    return [n for _, n in sorted(names)]


def base_of(name: str) -> str:
    """The resource a name stands for: "CPU" for "CPU_group_0_<pg>" and "CPU"."""
    parsed = _parse(name)
    return name if parsed is None else parsed[0]


def unbundled(resources: dict[str, float]) -> dict[str, float]:
    """A request with its bundle names taken back to the resources they stand
    for ({"CPU_group_0_<pg>": 1} -> {"CPU": 1}): what a task was given."""
    out: dict[str, float] = {}
    for name, amount in resources.items():
        parsed = _parse(name)
        base = name if parsed is None else parsed[0]
        if parsed is not None and base == "bundle":
            continue  # only places the task in its bundle
        out[base] = out.get(base, 0.0) + amount
    return out


def group_of(resources: dict[str, float]) -> bytes | None:
    """The placement group a request's bundle resources name, if any."""
    for name in resources:
        parsed = _parse(name)
        if parsed is not None:
            return parsed[1]
    return None


def bundle_resources(bundle: dict[str, float], pg_id: bytes, index: int) -> dict[str, float]:
    """What a reserved bundle adds to its node: per-bundle and per-group names."""
    out: dict[str, float] = {}
    for name, amount in bundle.items():
        out[bundle_resource(name, pg_id, index)] = amount
        out[bundle_resource(name, pg_id, None)] = amount
    # Lets zero-resource tasks and actors target the bundle too.
    out[f"bundle_group_{index}_{pg_id.hex()}"] = 1000.0
    out[f"bundle_group_{pg_id.hex()}"] = 1000.0
    return out


def bundles_resources(pg_id: bytes, bundles: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """What (index, bundle) pairs of one group reserved on one node add to it, summed."""
    out: dict[str, float] = {}
    for index, bundle in bundles:
        for k, v in bundle_resources(bundle, pg_id, index).items():
            out[k] = out.get(k, 0.0) + v
    return out
