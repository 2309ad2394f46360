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
    ex.cancel(tid, force=True, recursive=True)  # force: but it does not run, so no worker ends
    ((_, reply),) = owner.replies
    assert reply.task_id == tid and reply.error is not None and not reply.recalled
    item = ex.queue.get_nowait()
    assert item is not None
    ex.execute(*item)
    assert len(owner.replies) == 1
