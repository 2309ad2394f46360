"""The process's runtime slot and the per-task execution context.

One runtime serves a process between `init()` and `shutdown()` (the
cluster's `CoreRuntime`, or local mode's `LocalRuntime`: see interface.py);
the public API and object refs find it here. Per-task facts (task id, actor,
assigned resources) live in a ContextVar so threaded and async actors see
the right values in each call.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from manta._private.runtime.interface import Runtime

_runtime: Runtime | None = None


def current() -> Runtime | None:
    return _runtime


def require() -> Runtime:
    if _runtime is None:
        raise RuntimeError("manta is not initialized: call manta.init() first")
    return _runtime


def install(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt


@dataclass(slots=True)
class TaskContext:
    task_id: bytes
    name: str
    actor_id: bytes | None = None
    resources: dict[str, float] = field(default_factory=dict)
    attempt: int = 0
    restart_count: int = 0
    cancel_requested: bool = False
    thread_ident: int = 0
    # Where print() output goes, and how it is labelled: "(label pid=N) text".
    label: str = ""
    driver: str = ""
    job_id: int = 0
    gpu_ids: list[int] = field(default_factory=list)
    # The driver's own connection, when the driver sent this task: output
    # sent on it arrives before the task's result, so none is lost when the
    # driver exits right after get().
    log_conn: Any = None
    # The placement group children of this task run in (capture_child_tasks).
    placement_group: Any = None
    actor_creation: bool = False
    # The task as sent (its function, for get_task_function_name()).
    spec: Any = None
    # When it started running (the process's log clock): its story's
    # "running" step, recorded with its end in one record.
    started: float = 0.0
    # Why its run failed, as text with the traceback: sent to the head in
    # its story's record of the failed run (the dashboard shows it).
    error_text: str = ""


class ExitActor(BaseException):
    """Raised in an actor's method to end the actor on purpose (exit_actor(),
    __ray_terminate__): a BaseException, so `except Exception` in user code
    does not stop it. The message is the actor's cause of death."""


current_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "manta_current_task", default=None
)
