"""Rebuilding lost objects from lineage, on the owner's side and the reader's.

An owner keeps a finished task while any of its outputs stored on another
node is referenced (`LineageTable`, sans-IO, bounded by max_lineage_bytes),
with its arguments pinned. When that node dies, a reader asks the owner
(`GetObject.lost_node`); the owner runs the task again, recursively if its
inputs were lost too, within its retries, or records why it cannot, so the
reader gets that error instead of hanging. Outputs in the owner's own node
die with the owner, so they keep nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private.protocol import messages as m
from manta._private.runtime.lineage import LineageTable
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.refs import FreeStored
from manta._private.runtime.serialization import serialize_error
from manta._private.runtime.tasks import Task

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        # Finished tasks whose stored outputs may need rebuilding (I/O thread).
        self.lineage = LineageTable(rt.config.max_lineage_bytes)

    def keep(self, task: Task, reply: m.TaskDone) -> None:
        """Keeps a finished task while its outputs stored on other nodes live."""
        rt = self.rt
        if task.args_released:
            return
        with rt.lock:
            live = {
                r.object_id for r in reply.returns
                if r.in_store and r.node_id != rt.node_id and r.object_id in rt.refs.entries
            }
        size = 256 + len(task.spec.name) + sum(len(a.data or b"") + 64 for a in task.spec.args)
        for old in self.lineage.keep(task.task_id, task, live, size):
            rt.references.run_commands(rt.tasks.unpin_args(old))

    def holds_pins(self, task: Task) -> bool:
        """At a task's end: whether its lineage keeps its argument pins."""
        if task.task_id not in self.lineage:
            return False
        if self.lineage.backs_outputs(task.task_id):
            return True
        self.lineage.drop(task.task_id)  # a rebuild that failed, or whose outputs went
        return False

    def output_freed(self, object_id: bytes) -> list[Any]:
        """A stored output was freed: once a task backs none, its pins can go."""
        done = self.lineage.released(object_id)
        return [] if done is None else self.rt.tasks.unpin_args(done)

    def recover(self, oid: bytes, lost_node: bytes) -> None:
        """I/O thread, owner: the stored copy of `oid` on `lost_node` is gone."""
        rt = self.rt
        with rt.lock:
            e = rt.refs.get(oid)
            if e is None or not e.owned or not e.state or not e.in_store or (lost_node and e.node_id != lost_node):
                return  # freed, already being rebuilt, or already moved
            lost_on = e.node_id
        task = self.lineage.task_of(oid)
        node = (lost_node or lost_on).hex()
        err: BaseException | None = None
        if task is None:
            if self.lineage.was_evicted(oid):
                err = exc.ObjectReconstructionFailedLineageEvictedError(
                    oid.hex(), rt.address,
                    f"its node {node} died and the lineage to rebuild it was evicted "
                    f"(lineage past max_lineage_bytes={self.lineage.max_bytes})",
                )
            else:
                # A live node loses a copy when its spill file fails its check
                # (its agent.log says so); the news of a death may also be late.
                how = "which died" if (lost_node or lost_on) in rt.peers.dead_nodes else "which lost it or died"
                err = exc.ObjectLostError(
                    oid.hex(), rt.address,
                    f"its only copy was on node {node}, {how}; objects made by put() "
                    f"or by actor calls cannot be rebuilt from lineage",
                )
        elif task.retries_left == 0:
            err = exc.ObjectReconstructionFailedMaxAttemptsExceededError(
                oid.hex(), rt.address,
                f"its node {node} died and {task.spec.name}() that made it has no retries "
                f"left (max_retries) to run again",
            )
        if err is not None:
            rt.objects.set_ready(oid, serialize_error(err).to_bytes(), is_error=True)
            return
        assert task is not None
        log.info("rebuilding %s from lineage: running %s() again", oid.hex(), task.spec.name)
        task.next_attempt()
        cmds: list[Any] = []
        with rt.lock:
            for rid in task.return_ids:
                r = rt.refs.get(rid)
                if r is None or not r.state:
                    continue
                if r.in_store and r.node_id != lost_on:
                    cmds.append(FreeStored(rid, r.node_id))  # a surviving copy; replaced
                cmds += rt.refs.reset(rid)
        self.lineage.rebuilding(task.task_id)
        rt.references.run_commands(cmds)
        task.done = False
        task.resolved = False
        rt.tasks.submit_io(task)

    def relocate(self, ref: ObjectRef, lost_node: bytes) -> None:
        """Any thread but I/O: our copy of `ref` was on a node that is gone.
        Waits until its owner has rebuilt it elsewhere or recorded an error."""
        rt = self.rt
        with rt.lock:
            e = rt.refs.get(ref._id)
            if e is None:
                return
            owned = e.owned
            cmds = rt.refs.reset(ref._id) if not owned and e.state and e.node_id == lost_node else []
        if cmds:
            rt.post(rt.references.run_commands, cmds)
        if owned:
            # Wait until the I/O thread has marked it pending, or the wait
            # below could return at once on the stale copy.
            marked = threading.Event()

            def recover() -> None:
                try:
                    self.recover(ref._id, lost_node)
                finally:
                    marked.set()

            rt.post(recover)
            marked.wait()
        else:
            rt.post(rt.objects.ensure_fetch, ref, lost_node)
        rt.objects.wait_ready([ref], 1, None)
