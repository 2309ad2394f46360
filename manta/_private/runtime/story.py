"""What happened to each task, as this process saw it: a bounded log.

Every process appends a record at each step of its tasks (submitted, lease
requested, granted on node N, pushed to worker W, running, finished,
failed, retried, cancelled). Records made while handling one event share a
stimulus id, so "why did this happen" is answered by the event's other
records. `story(task_id)` returns a task's records, oldest first.

A record is a tuple appended to a deque: cheap enough to stay on. Details
are kept raw (ids as bytes) and formatted only when a story is read. The
hot paths call `append(Rec(task_id, STEP, stimulus, clock(), detail))` and
`stimulus()` directly: C calls only, no Python frame.
"""

from __future__ import annotations

import collections
import enum
import itertools
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from manta._private.clock import Clock, monotonic
from manta._private.protocol import messages as m

# Two to four records a task: the last few thousand tasks' stories here,
# room for what a busy driver records between two batches to the head
# (runtime/task_events.py), whose store keeps the longer history.
DEFAULT_RECORDS = 16_384


class Step(enum.StrEnum):
    SUBMITTED = "submitted"
    LEASE_REQUESTED = "lease requested"
    GRANTED = "granted"
    PUSHED = "pushed"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"


# What records hold: the steps' plain strings. An enum member costs a
# lookup through EnumType.__getattr__ on every use, and a tuple holding one
# stays tracked by the garbage collector; a tuple of strings, bytes and
# numbers is untracked at its first collection.
SUBMITTED = Step.SUBMITTED.value
LEASE_REQUESTED = Step.LEASE_REQUESTED.value
GRANTED = Step.GRANTED.value
PUSHED = Step.PUSHED.value
RUNNING = Step.RUNNING.value
FINISHED = Step.FINISHED.value
FAILED = Step.FAILED.value
RETRIED = Step.RETRIED.value
CANCELLED = Step.CANCELLED.value
# One record for two steps taken in one go (a call pushed the moment it is
# submitted, the common case): half the cost on the hot path; read back as
# both steps, with the same stimulus and time.
SUBMITTED_PUSHED = "submitted+pushed"
# A worker's failed run of a task, recorded once its answer is sent (detail:
# the attempt, the time it started and the error's text); a task still
# running is read from the executor instead.
RAN_FAILED = "running+failed"
# At most this much of a failed run's error text (its traceback) travels.
MAX_ERROR_TEXT = 16_384


# One record as kept: made in C, never tracked by the garbage collector, and
# sent to the head as it is (the state API's source).
Rec = m.TaskRecord


@dataclass(frozen=True, slots=True)
class StoryRecord:
    task_id: str
    step: Step
    stimulus_id: int
    time: float
    detail: str


class TaskLog:
    def __init__(self, clock: Clock = monotonic, maxlen: int = DEFAULT_RECORDS) -> None:
        self.clock = clock
        self._records: collections.deque[Rec] = collections.deque(maxlen=maxlen)
        # A fresh id for one incoming event (any thread: count() is atomic).
        self.stimulus = itertools.count(1).__next__
        self.append = self._records.append
        self._taken: Rec | None = None  # the newest record take_new returned

    def record(self, task_id: bytes, step: str, stimulus: int, detail: Any = "") -> None:
        self._records.append(Rec(task_id, step, stimulus, self.clock(), detail))

    def take_new(self) -> tuple[list[Rec], int]:
        """The records appended since the last call, oldest first, and how
        many were let go before they could be taken (a guess at the least:
        the ring turned over). Any one thread; others may append meanwhile."""
        records = self._records
        last = self._taken
        if not records or records[-1] is last:
            return [], 0
        # A C copy, atomic under the GIL; found by identity from the right,
        # so the cost is the new records', not the ring's.
        snapshot = list(records)
        self._taken = snapshot[-1]
        if last is None:
            return snapshot, 0
        for i in range(len(snapshot) - 2, -1, -1):
            if snapshot[i] is last:
                return snapshot[i + 1:], 0
        return snapshot, 1

    def story(self, task_id: bytes) -> list[StoryRecord]:
        out: list[StoryRecord] = []
        # By time: a record may be appended just after a later one (a direct
        # actor call's, appended once written, and its answer's).
        mine = sorted((r for r in list(self._records) if r.task_id == task_id), key=attrgetter("time"))
        tid = task_id.hex()
        for r in mine:
            if r.step == SUBMITTED_PUSHED:
                actor_id, epoch = r.detail[:2]
                out.append(StoryRecord(tid, Step.SUBMITTED, r.stimulus, r.time, _text(actor_id)))
                out.append(StoryRecord(tid, Step.PUSHED, r.stimulus, r.time, _text(epoch)))
            elif r.step == RAN_FAILED:
                attempt, started = r.detail[:2]
                out.append(StoryRecord(tid, Step.RUNNING, r.stimulus, started, _text(attempt)))
                out.append(StoryRecord(tid, Step.FAILED, r.stimulus, r.time, ""))
            else:
                out.append(StoryRecord(tid, Step(r.step), r.stimulus, r.time, _text(r.detail)))
        return out

    def __len__(self) -> int:
        return len(self._records)


def _text(detail: Any) -> str:
    if isinstance(detail, bytes):
        return detail.hex()
    if isinstance(detail, tuple):
        return " ".join(_text(d) for d in detail)
    return str(detail)
