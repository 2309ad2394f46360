"""A worker gives back, unrun, a task waiting behind another (Executor.recall),
only to the connection that sent it, and only if it has not started."""

from __future__ import annotations

from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime.executor import Executor


class Sent:
    """Stands in for the owner's connection: what the worker answers on it."""

    def __init__(self) -> None:
        self.replies: list[tuple[Any, Any]] = []

    def reply(self, request: Any, msg: Any) -> None:
        self.replies.append((request, msg))


def push(task_id: bytes) -> m.PushTask:
    spec = m.TaskSpec(
        task_id=task_id, job_id=1, name="f", fn_id=b"f", args=[], kwarg_names=[], num_returns=1,
        owner="unix:/me", resources={"CPU": 1.0}, placement=m.Placement(),
    )
    return m.PushTask(spec=spec)


def test_a_waiting_task_is_given_back_to_its_owner_and_then_skipped():
    ex = Executor(rt=None)  # type: ignore[arg-type]  # neither path below reaches the runtime
    owner, other = Sent(), Sent()
    tid = ids.TaskIds().next()
    msg = push(tid)
    ex.on_push(owner, msg)  # type: ignore[arg-type]
    ex.recall(other, tid)  # type: ignore[arg-type]  # not who sent it: nothing happens
    assert owner.replies == [] and other.replies == [] and tid in ex.waiting
    ex.recall(owner, tid)  # type: ignore[arg-type]
    ((request, reply),) = owner.replies
    assert request is msg and reply == m.TaskDone(task_id=tid, returns=[], recalled=True)
    # Its turn on the main thread passes without running it or answering again.
    item = ex.queue.get_nowait()
    assert item is not None
    ex.execute(*item)
    assert len(owner.replies) == 1 and not ex.running
    ex.recall(owner, tid)  # asked twice: answered once
    assert len(owner.replies) == 1


def test_a_task_that_started_is_not_given_back():
    ex = Executor(rt=None)  # type: ignore[arg-type]
    owner = Sent()
    tid = ids.TaskIds().next()
    ex.on_push(owner, push(tid))  # type: ignore[arg-type]
    ex.waiting.pop(tid)  # what execute() does first, on the main thread
    ex.recall(owner, tid)  # type: ignore[arg-type]
    assert owner.replies == []


def test_a_waiting_task_cancelled_is_answered_at_once_and_never_runs():
    ex = Executor(rt=None)  # type: ignore[arg-type]
    owner = Sent()
    tid = ids.TaskIds().next()
    ex.on_push(owner, push(tid))  # type: ignore[arg-type]
    ex.cancel(tid, force=True, recursive=True, conn=owner)  # type: ignore[arg-type]  # not running: no worker ends
    ((_, reply),) = owner.replies
    assert reply.task_id == tid and reply.error is not None and not reply.recalled
    item = ex.queue.get_nowait()
    assert item is not None
    ex.execute(*item)
    assert len(owner.replies) == 1


def test_a_cancel_from_another_connection_waits_for_the_tasks_turn():
    ex = Executor(rt=None)  # type: ignore[arg-type]
    owner, other = Sent(), Sent()
    tid = ids.TaskIds().next()
    ex.on_push(owner, push(tid))  # type: ignore[arg-type]
    ex.cancel(tid, force=False, recursive=False, conn=other)  # type: ignore[arg-type]
    assert owner.replies == [] and other.replies == []
    assert tid in ex.waiting and tid in ex.cancelled  # answered as cancelled when its turn comes


def test_a_task_given_back_and_pushed_here_again_runs_once_for_its_second_push():
    ex = Executor(rt=None)  # type: ignore[arg-type]
    owner = Sent()
    tid = ids.TaskIds().next()
    first, second = push(tid), push(tid)
    ex.on_push(owner, first)  # type: ignore[arg-type]
    ex.recall(owner, tid)  # type: ignore[arg-type]
    ex.on_push(owner, second)  # type: ignore[arg-type]  # the owner's next free lease was this worker's
    item = ex.queue.get_nowait()
    assert item is not None and item[1] is first
    ex.execute(*item)  # the first push's turn: given back already, so it passes
    assert len(owner.replies) == 1 and ex.waiting[tid] == (owner, second)
