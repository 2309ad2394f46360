"""The head's task states, folded from every process's task records.

Owners send what they recorded (submitted, pushed, finished, failed,
retried, cancelled: runtime/story.py); workers send the tasks they are
running. Batches from different processes arrive in any order, so a
task's state only moves forward within an attempt (a late "running" never
undoes "finished"), and a retry starts the next attempt afresh.

The store is bounded: past `capacity` tasks the oldest go first, and
`dropped` counts them (with records a process lost before sending). No
I/O here: the head feeds batches in and answers queries.

Batches are folded when someone asks, not when they arrive: a busy
cluster sends tens of thousands of records a second, and the head (on the
same cores as the work) would otherwise spend a few microseconds on each
whether anyone looks or not. Kept unfolded up to `capacity` records, then
folded in one go.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m

log = logging.getLogger(__name__)

# Ray's task states, as its state API names them.
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"
PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY = "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
# A worker's record of a run that failed (runtime/story.py RAN_FAILED), and
# how much of its error text is kept.
RAN_FAILED = "running+failed"
MAX_ERROR_TEXT = 16_384
# Failed runs kept while their tasks' submissions are on their way.
MAX_EARLY = 1024

# How far along each state is: a state is never replaced by a lower one.
_RANK = {
    PENDING_ARGS_AVAIL: 0,
    PENDING_NODE_ASSIGNMENT: 1,
    SUBMITTED_TO_WORKER: 2,
    PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY: 2,
    RUNNING: 3,
    FINISHED: 4,
    FAILED: 4,
}

NORMAL_TASK = "NORMAL_TASK"
ACTOR_TASK = "ACTOR_TASK"
ACTOR_CREATION_TASK = "ACTOR_CREATION_TASK"

# Ray's error types for the exceptions manta's owners record.
_ERROR_TYPES = {
    "TaskCancelledError": "TASK_CANCELLED",
    "WorkerCrashedError": "WORKER_DIED",
    "ActorDiedError": "ACTOR_DIED",
    "ActorUnavailableError": "ACTOR_UNAVAILABLE",
    "OutOfMemoryError": "OUT_OF_MEMORY",
    "NodeDiedError": "NODE_DIED",
    "TaskUnschedulableError": "TASK_UNSCHEDULABLE_ERROR",
    "ObjectLostError": "OBJECT_LOST",
    "ObjectFetchTimedOutError": "OBJECT_FETCH_TIMED_OUT",
    "ReferenceCountingAssertionError": "OBJECT_DELETED",
}

# The fields a query may filter on, and what each record shows.
FIELDS = (
    "task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type", "func_or_class_name",
    "parent_task_id", "node_id", "worker_id", "worker_pid", "error_type", "error_message", "language",
    "required_resources", "placement_group_id", "creation_time_ms", "start_time_ms", "end_time_ms",
)
OPS = ("=", "!=")


class TaskEntry:
    __slots__ = (
        "task_id", "attempt", "name", "type", "state", "job_id", "actor_id", "node_id", "worker_id",
        "worker_pid", "error_type", "error_message", "created", "started", "ended",
    )

    def __init__(self, task_id: bytes, name: str, kind: str, job_id: int, actor_id: bytes | None) -> None:
        self.task_id = task_id
        self.attempt = 0
        self.name = name
        self.type = kind
        self.state = PENDING_ARGS_AVAIL
        self.job_id = job_id
        self.actor_id = actor_id
        self.node_id = b""
        self.worker_id = b""
        self.worker_pid = 0
        self.error_type = ""
        self.error_message = ""
        self.created = 0.0
        self.started = 0.0
        self.ended = 0.0

    def advance(self, state: str) -> None:
        if _RANK[state] > _RANK[self.state]:
            self.state = state

    def view(self) -> dict[str, Any]:
        """The task with Ray's field names and value formats."""
        return {
            "task_id": self.task_id.hex(),
            "attempt_number": _count(self.attempt),
            "name": self.name,
            "state": self.state,
            "job_id": ids.job_hex(self.job_id) if 0 <= self.job_id < 1 << 32 else None,
            "actor_id": self.actor_id.hex() if self.actor_id else None,
            "type": self.type,
            "func_or_class_name": self.name,
            "parent_task_id": None,
            "node_id": self.node_id.hex() if self.node_id else None,
            "worker_id": self.worker_id.hex() if self.worker_id else None,
            "worker_pid": _count(self.worker_pid) or None,
            "error_type": self.error_type or None,
            "error_message": self.error_message or None,
            "language": "PYTHON",
            "required_resources": {},
            "placement_group_id": None,
            "creation_time_ms": _ms(self.created),
            "start_time_ms": _ms(self.started),
            "end_time_ms": _ms(self.ended),
        }


class TaskStates:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Oldest first, dropped from the front past capacity: an OrderedDict, since
        # `del d[next(iter(d))]` on a dict scans the holes earlier deletes left (a
        # million queued tasks stalled the head's loop past the nodes' 10 s timeout).
        self.tasks: collections.OrderedDict[bytes, TaskEntry] = collections.OrderedDict()
        self._dropped = 0
        self._unfolded: list[m.TaskEvents] = []
        self._unfolded_records = 0
        # Attempts that ended, since the head started (for rates: the table forgets).
        self.finished_total = 0
        self.failed_total = 0
        # Workers' failed runs whose owner's records have not come yet (the
        # two processes' batches race), by task id: applied when they do.
        self._early: collections.OrderedDict[bytes, tuple[Any, float, bytes, bytes, int]] = collections.OrderedDict()

    # -- in ---------------------------------------------------------------

    def add(self, batch: m.TaskEvents) -> None:
        """A process's batch, folded later (at the next query, or once
        `capacity` records wait)."""
        self._unfolded.append(batch)
        self._unfolded_records += len(batch.records) + len(batch.running)
        if self._unfolded_records > self.capacity:
            self._fold_waiting()

    def _fold_waiting(self) -> None:
        waiting, self._unfolded, self._unfolded_records = self._unfolded, [], 0
        for batch in waiting:
            try:
                self.fold(batch)
            except (TypeError, IndexError, KeyError, ValueError) as e:
                # A malformed batch: what it holds is lost, the rest stays.
                log.warning("dropped a malformed batch of task records from pid %d: %r", batch.pid, e)

    @property
    def dropped(self) -> int:
        self._fold_waiting()
        return self._dropped

    def fold(self, batch: m.TaskEvents) -> None:
        """One process's batch: its records in order, then what it runs."""
        wall = batch.wall
        tasks = self.tasks
        for r in batch.records:
            step = r.step
            when = wall + r.time
            if step == "submitted":
                d = r.detail
                if isinstance(d[0], str):  # (name, job): a task
                    e = self._entry(r.task_id, d[0], NORMAL_TASK, d[1], None)
                    e.advance(PENDING_NODE_ASSIGNMENT)
                else:  # (actor, name, job): an actor call waiting to go out
                    e = self._entry(r.task_id, d[1], ACTOR_TASK, d[2], d[0])
                e.created = e.created or when
                continue
            if step == "submitted+pushed":  # (actor, epoch, name, job)
                d = r.detail
                e = self._entry(r.task_id, d[2], ACTOR_TASK, d[3], d[0])
                e.created = e.created or when
                e.advance(PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY)
                continue
            found = tasks.get(r.task_id)
            if found is None:  # its submission was dropped, or is still on its way
                if step == RAN_FAILED:
                    self._early[r.task_id] = (r.detail, wall, batch.node_id, batch.worker_id, batch.pid)
                    if len(self._early) > MAX_EARLY:
                        self._early.popitem(last=False)
                continue
            e = found
            if step == "pushed":
                if e.type == NORMAL_TASK:
                    e.advance(SUBMITTED_TO_WORKER)
                    if isinstance(r.detail, bytes):
                        e.worker_id = r.detail
                else:
                    e.advance(PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY)
            elif step == "granted":  # ("node", node id, "lease", lease id)
                e.node_id = r.detail[1]
            elif step == "finished":
                self._end(e, FINISHED)
                e.ended = when
            elif step == "failed":
                self._end(e, FAILED)
                e.ended = when
                e.error_type = _ERROR_TYPES.get(r.detail, "TASK_EXECUTION_EXCEPTION")
            elif step == "cancelled":
                self._end(e, FAILED)
                e.ended = when
                e.error_type = "TASK_CANCELLED"
            elif step == "retried":
                self._next_attempt(e, e.attempt + 1)
            elif step == RAN_FAILED:  # a worker's failed run: (attempt, started, error text)
                self._ran_failed(e, r.detail, wall, batch.node_id, batch.worker_id, batch.pid)
        self._dropped += min(max(batch.lost, 0), 1 << 32)  # a peer's claim, kept encodable
        for t in batch.running:
            kind = ACTOR_CREATION_TASK if t.actor_creation else ACTOR_TASK if t.actor_id else NORMAL_TASK
            e = self._entry(t.task_id, t.name, kind, t.job_id, t.actor_id)
            if t.attempt < e.attempt:
                continue  # an earlier attempt's run, reported late
            if t.attempt > e.attempt:
                self._next_attempt(e, t.attempt)  # ahead of its owner's "retried"
            if _RANK[e.state] < _RANK[RUNNING]:
                e.state = RUNNING
                e.node_id, e.worker_id, e.worker_pid = batch.node_id, batch.worker_id, batch.pid
                e.started = wall + t.started
                e.created = e.created or e.started

    @staticmethod
    def _ran_failed(e: TaskEntry, detail: Any, wall: float, node_id: bytes, worker_id: bytes, pid: int) -> None:
        if not isinstance(detail, (list, tuple)) or len(detail) < 3 or detail[0] != e.attempt:
            return  # an older worker's record, or an earlier attempt's
        text = detail[2]
        if isinstance(text, str):
            e.error_message = text[:MAX_ERROR_TEXT]
        if not e.started and isinstance(detail[1], (int, float)):
            e.started = wall + detail[1]
        if not e.worker_id or e.worker_id == worker_id:
            e.node_id, e.worker_id, e.worker_pid = node_id, worker_id, pid

    def record(self, task_id: bytes, name: str, kind: str, job_id: int, actor_id: bytes | None,
               state: str, when: float) -> None:
        """A step the head itself saw (an actor's creation), at wall time `when`."""
        e = self._entry(task_id, name, kind, job_id, actor_id)
        e.created = e.created or when
        if state in (FINISHED, FAILED):
            self._end(e, state)
            e.ended = when
        else:
            e.advance(state)

    def _end(self, e: TaskEntry, state: str) -> None:
        if e.state not in (FINISHED, FAILED):
            if state == FINISHED:
                self.finished_total += 1
            else:
                self.failed_total += 1
        e.advance(state)

    def _entry(self, task_id: bytes, name: str, kind: str, job_id: int, actor_id: bytes | None) -> TaskEntry:
        e = self.tasks.get(task_id)
        if e is None:
            e = self.tasks[task_id] = TaskEntry(task_id, name, kind, job_id, actor_id)
            early = self._early.pop(task_id, None) if self._early else None
            if early is not None:
                self._ran_failed(e, *early)
            if len(self.tasks) > self.capacity:
                self.tasks.popitem(last=False)
                self._dropped += 1
        return e

    @staticmethod
    def _next_attempt(e: TaskEntry, attempt: int) -> None:
        e.attempt = attempt
        e.state = PENDING_NODE_ASSIGNMENT if e.type == NORMAL_TASK else PENDING_ARGS_AVAIL
        e.error_type = ""
        e.error_message = ""
        e.ended = 0.0

    # -- out --------------------------------------------------------------

    def counts(self) -> dict[tuple[str, str, bool], int]:
        """How many tasks the table holds by (state, name, is a retry), for /metrics."""
        self._fold_waiting()
        out: dict[tuple[str, str, bool], int] = {}
        for e in self.tasks.values():
            key = (e.state, e.name, e.attempt > 0)
            out[key] = out.get(key, 0) + 1
        return out

    def query(self, filters: list[tuple[str, str, str]], limit: int) -> tuple[list[dict[str, Any]], int]:
        """Tasks matching every filter, oldest first: at most `limit` of
        them, and how many matched. Raises ValueError naming a bad filter."""
        checks = check_filters(filters)
        self._fold_waiting()
        out: list[dict[str, Any]] = []
        total = 0
        for e in self.tasks.values():
            view = e.view()
            if all((_text(view[key]) == value) is (op == "=") for key, op, value in checks):
                total += 1
                if len(out) < limit:
                    out.append(view)
        return out, total


def check_filters(filters: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Filters as Ray takes them, keys and values compared without regard to
    case (they often come from a command line)."""
    checks = []
    for key, op, value in filters:
        k = key.lower()
        if k not in FIELDS:
            raise ValueError(f"{key!r} is not a task field; filter on one of: {', '.join(FIELDS)}")
        if op not in OPS:
            raise ValueError(f"Unsupported filter predicate {op!r}: use one of {', '.join(OPS)}")
        checks.append((k, op, _text(value)))
    return checks


def _text(value: Any) -> str:
    return str(value).lower()


# What the records of a process claim is taken as it is, but never made into
# a value the reply cannot carry: one such record would fail every later
# list_tasks, everyone's (found by the fuzz run).
def _ms(t: float) -> int | None:
    return int(t * 1000) if t and math.isfinite(t) and 0 < t < 1e12 else None


def _count(n: int) -> int:
    return n if 0 <= n < 1 << 63 else 0
