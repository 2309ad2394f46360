"""One caller's calls to one actor, without I/O: order, epochs, restarts.

Calls go straight from the caller to the actor's worker, in the order the
caller submitted them. `ActorQueue` decides when a call may be pushed, where
(the actor's address at its current epoch, found through the head), and
what happens to calls whose worker died: retried in submission order while
`max_task_retries` allows, else failed as the head says the actor is
(coming back: ActorUnavailableError; gone for good: ActorDiedError).

    UNKNOWN --locate--> LOCATING --located--> CONNECTING --connected--> CONNECTED
       ^                   |   ^                  |                        |
       |                   |   +--connect failed--+                        |
       |                   +--dead / not found--> DEAD                     |
       +-------------------- the connection broke -------------------------+

The runtime holds the queue's lock around every call but `replied` (see
there) and carries out the commands it returns: a user thread submitting a
call, or the I/O thread reporting what happened, drive the same queue, one
at a time.
"""

from __future__ import annotations

import bisect
import collections
import enum
from typing import Any

import msgspec

from manta import exceptions as exc
from manta._private.protocol import messages as m
from manta._private.runtime import story
from manta._private.runtime.errors import error_of_kind
from manta._private.runtime.story import Rec, TaskLog
from manta._private.runtime.tasks import Task


class Link(enum.Enum):
    UNKNOWN = "unknown"
    LOCATING = "locating"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEAD = "dead"


_TRANSITIONS = {
    (Link.UNKNOWN, Link.LOCATING),
    (Link.LOCATING, Link.CONNECTING),
    (Link.LOCATING, Link.DEAD),
    (Link.CONNECTING, Link.CONNECTED),
    (Link.CONNECTING, Link.LOCATING),
    (Link.CONNECTED, Link.UNKNOWN),
}


class IllegalTransition(Exception):
    """An internal bug: the actor queue was asked for an impossible change."""


# -- commands ----------------------------------------------------------------
# msgspec structs, not frozen dataclasses: made in C, about six times cheaper,
# and there are two or three a task. Untracked by the garbage collector (gc=
# False): a command lives for one event and nothing refers back to it.


class _Command(msgspec.Struct, frozen=True, gc=False):
    pass


class Locate(_Command, frozen=True):
    """Ask the head where the actor is once it is alive past `known_epoch`."""

    known_epoch: int


class Connect(_Command, frozen=True):
    address: str
    node_id: bytes


class Push(_Command, frozen=True):
    task: Task
    epoch: int


class SendCancel(_Command, frozen=True):
    task: Task
    recursive: bool


class Fail(_Command, frozen=True):
    task: Task
    error: BaseException


class AskFate(_Command, frozen=True):
    """The call's worker died and it may not be retried: ask the head whether
    the actor is coming back, then fail it with `fate_error`."""

    task: Task
    epoch: int
    error: BaseException


class Release(_Command, frozen=True):
    """Nothing is queued any more and its handles asked to release the actor."""


Command = Locate | Connect | Push | SendCancel | Fail | AskFate | Release


def _by_seq(task: Task) -> int:
    return task.seq


class ActorQueue:
    def __init__(self, actor_id: bytes, log: TaskLog) -> None:
        self.actor_id = actor_id
        self.log = log
        self.link = Link.UNKNOWN
        self.epoch = 0
        self.address = ""
        self.dead_cause = ""
        self.dead_kind: m.ErrorKind | None = None
        # Calls not pushed yet, in submission order (some await their arguments).
        self.pending: collections.deque[Task] = collections.deque()
        # Calls pushed and not answered: seq -> (task, the epoch pushed at).
        self.inflight: dict[int, tuple[Task, int]] = {}
        self._next_seq = 0
        self.release_when_idle = False
        # Its calls may run in any order (the head says, once it is located).
        self.out_of_order = False

    # -- events -----------------------------------------------------------

    def submit(self, task: Task) -> list[Command]:
        """A new call; `task.resolved` says whether its arguments are ready."""
        link = self.link
        log = self.log
        if task.resolved and link is Link.CONNECTED and not self.pending:
            # The common case: straight to the actor.
            log.append(self._in_flight_now(task))
            return [Push(task, self.epoch)]
        seq = self._next_seq = self._next_seq + 1
        task.seq = seq
        sid = log.stimulus()
        spec = task.spec
        log.append(Rec(task.task_id, story.SUBMITTED, sid, log.clock(), (self.actor_id, spec.name, spec.job_id)))
        out: list[Command] = []
        if link is Link.DEAD:
            self._fail(task, self._died(), out, sid)
            return out
        self.pending.append(task)
        self._flush(out, sid)
        return out

    def try_push(self, task: Task) -> Rec | None:
        """A new call with its arguments ready, if it can go straight out:
        connected, with nothing queued or in flight. Then it is in flight
        (at `self.epoch`) and its story record is returned, for the caller
        to append once the call is written: off the wait for its answer
        (the record's time is taken now, so the story stays in order).
        Otherwise nothing changes, None is returned and the caller submits
        it the usual way. The hot path, kept to a few steps: the state
        `submit` would leave, in one record."""
        if self.link is not Link.CONNECTED or self.pending or self.inflight:
            return None
        return self._in_flight_now(task)

    def _in_flight_now(self, task: Task) -> Rec:
        """Puts a new call in flight at the current epoch; returns its one
        record (submitted and pushed at once)."""
        seq = self._next_seq = self._next_seq + 1
        task.seq = seq
        epoch = self.epoch
        self.inflight[seq] = (task, epoch)
        log = self.log
        spec = task.spec
        return Rec(
            task.task_id, story.SUBMITTED_PUSHED, log.stimulus(), log.clock(),
            (self.actor_id, epoch, spec.name, spec.job_id),
        )

    def resolved(self, task: Task) -> list[Command]:
        out: list[Command] = []
        self._flush(out, self.log.stimulus())
        return out

    def located(self, state: m.ActorState | BaseException) -> list[Command]:
        out: list[Command] = []
        sid = self.log.stimulus()
        if isinstance(state, BaseException):
            self._move(Link.DEAD)
            self.dead_cause = f"the actor could not be located: {state}"
        elif state.state is m.ActorStatus.DEAD:
            self._move(Link.DEAD)
            self.dead_cause = state.death_cause or "The actor is dead."
            self.dead_kind = state.death_kind
        else:
            self._move(Link.CONNECTING)
            self.epoch = state.epoch
            self.address = state.address
            self.out_of_order = state.out_of_order
            out.append(Connect(state.address, state.node_id))
            return out
        self._flush(out, sid)
        return out

    def connected(self) -> list[Command]:
        out: list[Command] = []
        self._move(Link.CONNECTED)
        self._flush(out, self.log.stimulus())
        return out

    def connect_failed(self) -> list[Command]:
        # Dead before we reached it: ask the head again.
        self._move(Link.LOCATING)
        return [Locate(self.epoch)]

    def replied(self, task: Task, errored: bool) -> bool:
        """The call was answered (its result, or its own error): the caller
        delivers it. Returns whether the actor is now to be released.

        The one event that may come without the lock: it removes only this
        call's own in-flight entry (one dict operation), and the release flag
        it reads is set only once no handle is left to submit a call with.
        """
        self.inflight.pop(task.seq, None)
        log = self.log
        log.append(Rec(task.task_id, story.FAILED if errored else story.FINISHED, log.stimulus(), log.clock()))
        if self.release_when_idle and not self.busy():
            self.release_when_idle = False
            return True
        return False

    def lost(self, task: Task, error: BaseException, link_broken: bool) -> list[Command]:
        """The call got no answer: the actor's worker died, or the link to it broke."""
        out: list[Command] = []
        sid = self.log.stimulus()
        _, epoch = self.inflight.pop(task.seq, (task, self.epoch))
        if link_broken and self.link is Link.CONNECTED:
            self._move(Link.UNKNOWN)
        if task.cancelled:
            self._fail(task, exc.TaskCancelledError(task.task_id.hex()), out, sid, story.CANCELLED)
        elif task.retries_left != 0:
            task.next_attempt()
            # Back in submission order among the calls not yet pushed.
            bisect.insort(self.pending, task, key=_by_seq)
            self.log.record(task.task_id, story.RETRIED, sid, f"its actor's worker died: {error}")
        else:
            out.append(AskFate(task, epoch, error))
        self._flush(out, sid)
        self._maybe_release(out)
        return out

    def retry(self, task: Task) -> list[Command]:
        """A call that raised one of its retry_exceptions goes again at its
        own place in the order: before the calls not yet sent, one of which
        may be waiting for its result (behind it, that would never come)."""
        out: list[Command] = []
        sid = self.log.stimulus()
        bisect.insort(self.pending, task, key=_by_seq)
        self._flush(out, sid)
        return out

    def unsent(self, task: Task) -> list[Command]:
        """The call never left: its link had closed (the actor's worker died
        while nothing was in flight). It cannot have run, so it waits for the
        actor again at no cost to its retries, as in Ray."""
        out: list[Command] = []
        sid = self.log.stimulus()
        self.inflight.pop(task.seq, None)
        if self.link is Link.CONNECTED:
            self._move(Link.UNKNOWN)
        if task.cancelled:
            self._fail(task, exc.TaskCancelledError(task.task_id.hex()), out, sid, story.CANCELLED)
        else:
            bisect.insort(self.pending, task, key=_by_seq)
        self._flush(out, sid)
        self._maybe_release(out)
        return out

    def cancel(self, task: Task, recursive: bool) -> list[Command]:
        out: list[Command] = []
        sid = self.log.stimulus()
        if task in self.pending:
            self.pending.remove(task)
            self._fail(task, exc.TaskCancelledError(task.task_id.hex()), out, sid, story.CANCELLED)
        elif task.seq in self.inflight:
            out.append(SendCancel(task, recursive))
        return out

    def release(self) -> list[Command]:
        """Every handle is gone: release the actor once no call needs it."""
        if self.busy():
            # Calls already submitted keep the actor alive (as in Ray), so
            # `A.remote().f.remote()` works though the handle is gone at once.
            self.release_when_idle = True
            return []
        return [Release()]

    # -- queries ----------------------------------------------------------

    def busy(self) -> bool:
        return bool(self.pending or self.inflight)

    def idle(self) -> bool:
        """Connected with nothing queued or in flight: a new call goes straight out."""
        return self.link is Link.CONNECTED and not self.pending and not self.inflight

    def validate(self) -> None:
        seqs = [t.seq for t in self.pending]
        assert seqs == sorted(seqs), f"calls out of order: {seqs}"
        assert not (set(seqs) & set(self.inflight)), "a call both pending and in flight"
        for seq, (task, epoch) in self.inflight.items():
            assert task.seq == seq and epoch <= self.epoch
        if self.link is Link.DEAD:
            assert not self.pending, "calls left queued on a dead actor"
        if self.link is Link.CONNECTED and self.pending:
            head = self.pending[0]
            assert not (head.resolved or head.done), "a ready call not pushed on a live link"

    # -- internals --------------------------------------------------------

    def _move(self, new: Link) -> None:
        if (self.link, new) not in _TRANSITIONS:
            raise IllegalTransition(f"actor {self.actor_id.hex()}: {self.link.value} -> {new.value}")
        self.link = new

    def _flush(self, out: list[Command], sid: int) -> None:
        if self.link is Link.DEAD:
            error = self._died()
            while self.pending:
                self._fail(self.pending.popleft(), error, out, sid)
            return
        if self.link is Link.UNKNOWN:
            if self.pending:
                self._move(Link.LOCATING)
                out.append(Locate(self.epoch))
            return
        if self.link is not Link.CONNECTED:
            return
        pending = self.pending
        # A call whose arguments failed is done already: it only leaves the queue.
        while pending and (pending[0].resolved or pending[0].done):
            task = pending.popleft()
            if not task.done:
                self._push(task, out, sid)
        if pending:
            self._flush_past_waiting(out, sid)

    def _flush_past_waiting(self, out: list[Command], sid: int) -> None:
        """Calls that need not wait behind the first one still waiting for its
        arguments: any, on an actor that runs calls out of order; otherwise
        those of other concurrency groups, which keep their own order."""
        keep: collections.deque[Task] = collections.deque()
        waiting_groups: set[str] = set()
        for task in self.pending:
            group = task.spec.concurrency_group
            if task.done:
                continue
            if task.resolved and (self.out_of_order or group not in waiting_groups):
                self._push(task, out, sid)
            else:
                waiting_groups.add(group)
                keep.append(task)
        self.pending = keep

    def _push(self, task: Task, out: list[Command], sid: int) -> None:
        self.inflight[task.seq] = (task, self.epoch)
        log = self.log
        log.append(Rec(task.task_id, story.PUSHED, sid, log.clock(), self.epoch))
        out.append(Push(task, self.epoch))

    def _maybe_release(self, out: list[Command]) -> None:
        if self.release_when_idle and not self.busy():
            self.release_when_idle = False
            out.append(Release())

    def _died(self) -> BaseException:
        if self.dead_kind is not None:
            return error_of_kind(self.dead_kind, self.dead_cause)
        return exc.ActorDiedError(error_msg=self.dead_cause, actor_id=self.actor_id.hex())

    def _fail(self, task: Task, error: BaseException, out: list[Command], sid: int, step: str = story.FAILED) -> None:
        self.log.record(task.task_id, step, sid, type(error).__name__)
        out.append(Fail(task, error))


def fate_error(task: Task, actor_id: bytes, error: BaseException, state: Any) -> BaseException:
    """What a call whose worker died fails with, given the head's word on its actor
    (an ActorState, or the exception asking for it raised)."""
    if isinstance(state, BaseException) or state.state is m.ActorStatus.DEAD:
        cause = "" if isinstance(state, BaseException) else state.death_cause
        return exc.ActorDiedError(
            error_msg=(
                f"The actor died while running {task.spec.name}(): "
                f"{cause or error}. Check the actor's log for the cause."
            ),
            actor_id=actor_id.hex(),
        )
    return exc.ActorUnavailableError(
        error_msg=(
            f"The actor {actor_id.hex()} is unavailable: its worker died while running "
            f"{task.spec.name}() ({error}) and it is being restarted. The task may or "
            f"may not have been executed on the actor."
        ),
        actor_id=actor_id.hex(),
    )
