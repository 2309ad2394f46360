"""Which finished tasks an owner keeps, to rebuild their outputs; no I/O.

An output that lives in a node's store dies with that node. Its owner can
make it again by running the task that made it, so it keeps that task (its
spec, and pins on its arguments) while any such output is referenced. The
table's size is bounded (Ray's `max_lineage_bytes`): past it the oldest
tasks are evicted, and their outputs, if lost, cannot be rebuilt; the
table remembers that, so the error can say why.

The runtime calls `keep` when a task with stored outputs finishes,
`released` when one of those outputs is freed, `rebuilding` when it runs a
task again, and releases the argument pins of every task these return.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Record:
    task_id: bytes
    task: Any
    size: int
    live: set[bytes] = field(default_factory=set)


class LineageTable:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._tasks: collections.OrderedDict[bytes, _Record] = collections.OrderedDict()
        self._by_output: dict[bytes, _Record] = {}
        self._evicted: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: bytes) -> bool:
        return task_id in self._tasks

    def keep(self, task_id: bytes, task: Any, outputs: set[bytes], size: int) -> list[Any]:
        """Keeps a finished task for its stored, still referenced `outputs`.
        Returns the tasks evicted to stay within budget (their pins can go)."""
        rec = self._tasks.get(task_id)
        if rec is not None:
            rec.live = set(outputs)  # a rebuild finished: the outputs are backed again
        else:
            rec = self._tasks[task_id] = _Record(task_id, task, size, set(outputs))
            self.bytes += size
        for oid in outputs:
            self._by_output[oid] = rec
        evicted = []
        while self.bytes > self.max_bytes and len(self._tasks) > 1:
            oldest = next(iter(self._tasks.values()))
            self._evicted |= oldest.live
            evicted.append(self._drop(oldest))
        return evicted

    def released(self, output: bytes) -> Any | None:
        """An output was freed. Returns its task once none of its outputs is
        referenced any more: its lineage is gone, its pins can go."""
        self._evicted.discard(output)
        rec = self._by_output.pop(output, None)
        if rec is None:
            return None
        rec.live.discard(output)
        return None if rec.live else self._drop(rec)

    def task_of(self, output: bytes) -> Any | None:
        """The task that can rebuild `output`, if it is kept."""
        rec = self._by_output.get(output)
        return None if rec is None else rec.task

    def was_evicted(self, output: bytes) -> bool:
        return output in self._evicted

    def rebuilding(self, task_id: bytes) -> None:
        """The task runs again: until it finishes, its outputs have no copy to lose."""
        rec = self._tasks.get(task_id)
        if rec is not None:
            for oid in rec.live:
                if self._by_output.get(oid) is rec:
                    del self._by_output[oid]
            rec.live = set()

    def backs_outputs(self, task_id: bytes) -> bool:
        rec = self._tasks.get(task_id)
        return rec is not None and bool(rec.live)

    def drop(self, task_id: bytes) -> Any | None:
        rec = self._tasks.get(task_id)
        return None if rec is None else self._drop(rec)

    def validate(self) -> None:
        assert self.bytes == sum(r.size for r in self._tasks.values()), "byte count out of step"
        for oid, rec in self._by_output.items():
            assert self._tasks.get(rec.task_id) is rec, f"{oid.hex()} backed by a dropped task"
            assert oid in rec.live, f"{oid.hex()} indexed but not live"
        for rec in self._tasks.values():
            for oid in rec.live:
                assert self._by_output.get(oid) is rec, f"{oid.hex()} live but not indexed"

    def _drop(self, rec: _Record) -> Any:
        del self._tasks[rec.task_id]
        self.bytes -= rec.size
        for oid in rec.live:
            if self._by_output.get(oid) is rec:
                del self._by_output[oid]
        rec.live = set()
        return rec.task
