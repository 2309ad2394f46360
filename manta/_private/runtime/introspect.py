"""What a driver or worker tells the state API about itself when asked:
its reference table in Ray's words (`list_objects`).

Built on the I/O thread from the reference table and the tasks in flight,
only when the node agent asks: nothing is recorded ahead for it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from manta._private import ids
from manta._private.protocol import state_messages as sm
from manta._private.runtime.refs import READY, ReferenceTable


def reference_records(table: ReferenceTable, task_of: Callable[[bytes], Any]) -> list[sm.RefRecord]:
    """One record per entry. `task_of(object_id)` is the unfinished task
    (runtime/tasks.py `Task`) that will make an owned object, or None.

    The reference type follows Ray's order of precedence: an actor handle;
    a use by a pending task (an argument, or a ref travelling in a
    message); a live ObjectRef here; a ref inside another object this
    process holds. (PINNED_IN_MEMORY is the node agent's to tell: it knows
    what this process pins in the store.)
    """
    entries = table.entries
    captured = collections.Counter(cid for e in entries.values() for cid, _ in e.contained)
    out = []
    for oid, e in entries.items():
        if oid in table.actor_holds:
            out.append(sm.RefRecord(object_id=oid, reference_type="ACTOR_HANDLE", task_status="NIL"))
            continue
        inside = captured.get(oid, 0)
        if e.pins > inside:
            kind = "USED_BY_PENDING_TASK"
        elif e.local > 0:
            kind = "LOCAL_REFERENCE"
        elif inside:
            kind = "CAPTURED_IN_OBJECT"
        else:
            kind = "UNKNOWN_STATUS"  # held only by other processes borrowing it
        status, attempt = _task_status(oid, e, task_of) if e.owned else ("NIL", 1)
        size = len(e.data) if e.state == READY and e.data is not None and not e.in_store else -1
        out.append(sm.RefRecord(
            object_id=oid, reference_type=kind, task_status=status, attempt=attempt, size=size,
            in_store=e.in_store, node_id=e.node_id, owned=e.owned,
        ))
    return out


def _task_status(oid: bytes, e: Any, task_of: Callable[[bytes], Any]) -> tuple[str, int]:
    """The status of the task making an owned object, in Ray's words (a put
    is a finished task), and its attempt counted from 1."""
    task = task_of(oid) if oid[ids.TASK_ID_SIZE:] != bytes(ids.INDEX_SIZE) else None
    attempt = task.spec.attempt + 1 if task is not None else 1
    if e.state == READY:
        return ("FAILED" if e.is_error else "FINISHED"), attempt
    if task is None:
        return "NIL", attempt
    if not task.resolved:
        return "PENDING_ARGS_AVAIL", attempt
    if task.spec.actor_id is None and task.lease is None:
        return "PENDING_NODE_ASSIGNMENT", attempt
    return "SUBMITTED_TO_WORKER", attempt
