"""Bounds on the head's tables, so one asker cannot grow its memory without end.

Two kinds, both simple caps from `Config`:

- What an asker adds (KV entries and bytes per namespace, named actors,
  placement groups, actors and groups waiting for room, running jobs,
  the bytes of exported functions) is
  refused past its cap with a `ValueError` that names the cap, to that
  asker alone: nothing already there is dropped, and everyone else is
  served as before. Per-job and per-token quotas are another layer.
- What the head keeps only as history (finished jobs, dead actors, removed
  placement groups) is trimmed, oldest first, past its cap.

Checks are O(1) on every request; history is trimmed in batches of a
tenth of its cap, so trimming costs O(1) per request amortized (until a
table is full of live entries: then each refusal scans it once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from manta._private.control.actors import DEAD, PENDING, RESTARTING
from manta._private.control.placement_groups import REMOVED
from manta._private.protocol import messages as m

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)


class KvTable(dict[tuple[str, bytes], bytes]):
    """The head's KV entries, counting entries and bytes per namespace as they change.

    The head writes it only by `kv[k] = v` and `del kv[k]`, which keep the counts."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, list[int]] = {}  # namespace -> [entries, bytes of keys and values]

    def __setitem__(self, key: tuple[str, bytes], value: bytes) -> None:
        old = self.get(key)
        u = self.usage.setdefault(key[0], [0, 0])
        if old is None:
            u[0] += 1
            u[1] += len(key[1]) + len(value)
        else:
            u[1] += len(value) - len(old)
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[str, bytes]) -> None:
        old = self[key]
        super().__delitem__(key)
        u = self.usage[key[0]]
        u[0] -= 1
        u[1] -= len(key[1]) + len(old)
        if not u[0]:
            del self.usage[key[0]]

    def validate(self) -> None:
        counted: dict[str, list[int]] = {}
        for (ns, k), v in self.items():
            u = counted.setdefault(ns, [0, 0])
            u[0] += 1
            u[1] += len(k) + len(v)
        assert counted == self.usage, (counted, self.usage)


class FunctionTable(dict[bytes, bytes]):
    """The head's function blobs, with their total size. Written by `t[k] = v` and `update`."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        old = self.get(key)
        self.bytes += len(value) - (len(old) if old is not None else 0)
        super().__setitem__(key, value)

    def update(self, other: Any = (), **kw: Any) -> None:
        for k, v in dict(other, **kw).items():
            self[k] = v


class Bounds:
    def __init__(self, head: Head) -> None:
        self.head = head
        c = head.config
        self.config = c
        # The size of the actor table at which dead actors are next trimmed.
        self._trim_actors = c.max_dead_actors

    def refusal(self, msg: Any) -> str:
        """Why `msg` would pass one of the head's bounds ("" if it would not); trims history first."""
        t = type(msg)
        if t is m.KvPut:
            return self._kv(msg)
        if t is m.CreateActor:
            return self._actor(msg.spec)
        if t is m.CreatePlacementGroup:
            return self._pg(msg.spec)
        if t is m.RegisterDriver and not msg.job_id:
            return self._job()
        if t is m.PutFunction:
            return self._function(msg)
        return ""

    def _function(self, msg: m.PutFunction) -> str:
        functions, cap = self.head.functions, self.config.max_function_bytes
        assert isinstance(functions, FunctionTable)
        if msg.fn_id in functions or functions.bytes + len(msg.blob) <= cap:
            return ""
        return (f"the cluster holds {functions.bytes} bytes of functions; this one's {len(msg.blob)} would pass "
                f"max_function_bytes ({cap}): pass large values to tasks as objects (put), not in closures")

    def _kv(self, msg: m.KvPut) -> str:
        c = self.config
        kv = self.head.kv
        assert isinstance(kv, KvTable)
        key = (msg.namespace, msg.key)
        old = kv.get(key)
        if old is not None and not msg.overwrite:
            return ""
        entries, size = kv.usage.get(msg.namespace, (0, 0))
        if old is None:
            entries += 1
            size += len(msg.key) + len(msg.value)
        else:
            size += len(msg.value) - len(old)
        if entries > c.max_kv_entries_per_namespace:
            return (f"the KV namespace {msg.namespace!r} holds {entries - 1} entries, the most allowed "
                    f"(max_kv_entries_per_namespace)")
        if size > c.max_kv_bytes_per_namespace and (old is None or len(msg.value) > len(old)):
            return (f"the KV namespace {msg.namespace!r} would hold {size} bytes, more than allowed "
                    f"({c.max_kv_bytes_per_namespace}, max_kv_bytes_per_namespace)")
        return ""

    def _actor(self, spec: m.ActorSpec) -> str:
        head, c = self.head, self.config
        if spec.actor_id in head.actors:
            return ""  # sent again after a head restart
        if len(head.actors) >= self._trim_actors:
            self._trim_dead_actors()
        if spec.name and (spec.namespace, spec.name) not in head.named and len(head.named) >= c.max_named_actors:
            return f"the cluster holds {len(head.named)} named actors, the most allowed (max_named_actors)"
        return self._pending()

    def _pg(self, spec: m.PlacementGroupSpec) -> str:
        head, c = self.head, self.config
        if spec.pg_id in head.pgs:
            return ""
        if len(head.pgs) >= c.max_placement_groups:
            self._trim_removed_pgs()
        if len(head.pgs) >= c.max_placement_groups:
            return f"the cluster holds {len(head.pgs)} placement groups, the most allowed (max_placement_groups)"
        return self._pending()

    def _pending(self) -> str:
        head, cap = self.head, self.config.max_pending_demands
        if len(head.actors) + len(head.pgs) < cap:
            return ""  # fewer entries than the cap: no need to count the waiting ones
        waiting = sum(1 for e in head.actors.values() if e.state in (PENDING, RESTARTING) and not e.worker_id)
        waiting += sum(1 for pg in head.pgs.values() if pg.needs_placement())
        if waiting >= cap:
            return (f"{waiting} actors and placement groups are waiting for resources, the most allowed "
                    f"(max_pending_demands)")
        return ""

    def _job(self) -> str:
        head, c = self.head, self.config
        if len(head.jobs) >= c.max_jobs:
            # Forget the oldest finished jobs, down to nine tenths of the cap.
            ended = sorted((j for j in head.jobs.values() if not j.alive), key=lambda j: j.end_time)
            gone = ended[: len(head.jobs) - c.max_jobs + max(1, c.max_jobs // 10)]
            for j in gone:
                del head.jobs[j.job_id]
                head.storage.delete("jobs", str(j.job_id).encode())
            if gone:
                log.info("forgot the %d oldest finished jobs (max_jobs %d)", len(gone), c.max_jobs)
        if len(head.jobs) >= c.max_jobs:
            return f"the cluster runs {len(head.jobs)} jobs, the most allowed (max_jobs)"
        return ""

    def _trim_dead_actors(self) -> None:
        head, cap = self.head, self.config.max_dead_actors
        dead = [a for a, e in head.actors.items() if e.state == DEAD]
        # Dicts keep insertion order: the first dead are the oldest created.
        for aid in dead[: max(0, len(dead) - cap + cap // 10)]:
            del head.actors[aid]
            head.storage.delete("actors", aid)
        self._trim_actors = len(head.actors) + max(1, cap // 10)

    def _trim_removed_pgs(self) -> None:
        head, cap = self.head, self.config.max_placement_groups
        removed = [p for p, pg in head.pgs.items() if pg.state is REMOVED]
        # The oldest removed go, down to nine tenths of the cap (those left stay listed, as in Ray).
        for pid in removed[: len(head.pgs) - cap + max(1, cap // 10)]:
            del head.pgs[pid]
            head.storage.delete("pgs", pid)
