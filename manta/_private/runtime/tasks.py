"""A task as its owner tracks it, from submission to its last result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msgspec.structs import replace

from manta._private.protocol import messages as m


@dataclass(eq=False, slots=True)
class Task:
    task_id: bytes  # spec.task_id, which never changes
    spec: m.TaskSpec
    return_ids: list[bytes]
    # Objects kept alive for the task: its ref arguments and what they contain.
    pinned: list[bytes]
    retries_left: int = 0
    retry_exceptions: bool | tuple[type, ...] = False
    # Ref arguments not yet resolved to a value or a stored copy.
    unresolved: int = 0
    resolved: bool = False
    cancelled: bool = False
    done: bool = False
    # Plain tasks: the lease running it and the shape it queues in (leasing).
    lease: Any = None
    shape: Any = None
    # Actor calls: the order in which its caller submitted it to its actor.
    seq: int = 0
    # The task (of this process) that submitted it, if any: cancel(recursive).
    parent: bytes = b""
    # Its argument pins are gone: set once, by the task's end or (if its
    # stored outputs are kept rebuildable) by the end of its lineage.
    args_released: bool = False
    # A streaming generator task: the caller's stream of its items.
    stream: Any = None
    # Counted in its owner's pending tasks, for the max_pending_tasks quota.
    counted: bool = False
    # Asked back, unrun, from the worker it waits on (leasing: pipelining).
    recalled: bool = False

    def may_retry_on_error(self) -> bool:
        """Whether its own error may send it again: retries left, not
        cancelled, and retry_exceptions asked for (which errors: see
        `submission.should_retry`)."""
        return self.retries_left != 0 and not self.cancelled and bool(self.retry_exceptions)

    def next_attempt(self) -> None:
        """Runs again: one retry fewer (unless unlimited), the attempt counted."""
        if self.retries_left > 0:
            self.retries_left -= 1
        if self.stream is not None:
            # The items already streamed are skipped: nothing is seen twice.
            self.spec = replace(self.spec, attempt=self.spec.attempt + 1, stream_from=len(self.stream.items))
        else:
            self.spec = replace(self.spec, attempt=self.spec.attempt + 1)
