"""Task submission decisions, without I/O: leases, reuse, spillback, retries.

An owner runs its tasks on workers it leases from node agents. Tasks with
the same resource shape (resources, environment, placement, whether they
may be retried) share leases: a lease that finishes a task takes the next
one of its shape at once. `LeaseClient` makes every decision about that and
returns what to do as commands; the runtime's submission shell carries them
out and reports back what happened as events (its method calls):

    submit(task)                     a task whose arguments are resolved
    lease_granted / _redirected / _failed        an agent's answer
    redirect_unreachable             the node a request was sent to is gone
    worker_connected / _unreachable  the leased worker, dialled
    task_replied / worker_lost       the worker's answer, or its death
    lease_killed                     the memory monitor's word on a lease
    cancel, node_died, tick          the user, the head, the clock

Idle leases go back to their agent after `idle_s`, or the moment another
shape wants resources they hold. A shape whose tasks have lately been short
is pipelined: each busy lease holds up to `depth` of its tasks, which its
worker runs in order, and a task that waits behind one that has run for
`recall_s` is asked back unrun for another lease to take. A task whose
worker died is run again while it has retries; its last failure says why
it died (the memory monitor's verdict may trail the broken connection by
`verdict_s`).

All methods run on the runtime's I/O thread; nothing here blocks or sleeps,
and time comes from the injected clock.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from manta import exceptions as exc
from manta._private.clock import Clock
from manta._private.protocol import messages as m
from manta._private.runtime import story
from manta._private.runtime.story import Rec, TaskLog
from manta._private.runtime.tasks import Task

# The agent of this process's node; others are named by their address.
LOCAL = ""
# A lease idle this long goes back to its agent.
IDLE_S = 0.02
MAX_REQUESTS = 16
# How long a task whose worker died waits for the agent to say it killed it.
VERDICT_S = 0.1
# How long the agent's word on a killed lease is kept for a task to read.
KILL_NOTE_S = 1.0
# Timers fire up to a millisecond early on a coarse loop clock (uvloop).
SLACK_S = 1e-3
# Pipelining. Without it a worker waits, after each answer, for the owner to
# read it and push the next task: a round trip through two I/O threads per
# task. Bursts of 1,000 trivial tasks on two workers (2 vCPUs, one run, three
# rounds each): 4,800 tasks/s without, 6,400-7,000 with two tasks a lease,
# 8,000-8,300 with four, 8,500-9,800 with eight; the workers' CPU per task
# fell from 142 to 80 us (fewer wake-ups), the owner's from 130 to 80-90.
# Only shapes whose tasks lately took at most PIPELINE_S are pipelined, so a
# task waits behind short ones; one that waits behind a task running past
# RECALL_S is taken back, unrun, as Ray (which does not pipeline) would have
# given it to the next lease free.
PIPELINE_DEPTH = 8
PIPELINE_S = 0.002
RECALL_S = 0.01


@dataclass(eq=False, slots=True)
class Shape:
    """The tasks that can share a lease, and the leases they share."""

    key: Hashable
    resources: dict[str, float]
    env_vars: dict[str, str]
    placement: m.Placement
    retriable: bool
    queue: collections.deque[Task] = field(default_factory=collections.deque)
    idle: list[Lease] = field(default_factory=list)
    busy: set[Lease] = field(default_factory=set)
    requests: int = 0
    # How long its tasks took lately, answer to answer (-1: none yet): rises
    # at once with a long one, falls slowly (`_ran`).
    run_s: float = -1.0
    # Tasks pushed behind another on their lease (pipelined), over all its leases.
    piped: int = 0


@dataclass(eq=False, slots=True)
class Lease:
    lease_id: int
    worker_id: bytes
    address: str  # the worker's
    node_id: bytes
    agent: str  # the agent that granted it: LOCAL or its address
    gpu_ids: list[int]
    shape: Shape
    # What its worker was sent, in order: the first runs, the rest wait there.
    tasks: list[Task] = field(default_factory=list)
    # When the first of `tasks` started, as the owner sees it: its push, or
    # the answer to the task before it.
    since: float = 0.0
    idle_since: float = 0.0
    # No task has run on it yet (the story says where it was granted).
    fresh: bool = True
    # The shell's way to the worker (its connection), opaque here.
    channel: Any = None
    # Its agent asked for it back (others wait): returned after its tasks.
    reclaimed: bool = False
    # Its worker died: returned, and its tasks are being accounted for.
    dead: bool = False
    # Which of its tasks was running when its worker died.
    ran: Task | None = None


# -- commands ----------------------------------------------------------------
# msgspec structs, not frozen dataclasses: made in C, about six times cheaper,
# and there are two or three a task. Untracked by the garbage collector (gc=
# False): a command lives for one event and nothing refers back to it.


class _Command(msgspec.Struct, frozen=True, gc=False):
    pass


class RequestLease(_Command, frozen=True):
    """Ask `agent` for a lease of `shape`; if it cannot be reached, tell
    `redirect_unreachable(shape, fallback)`."""

    shape: Shape
    agent: str
    spilled: bool
    fallback: str = LOCAL


class ConnectWorker(_Command, frozen=True):
    lease: Lease


class PushTask(_Command, frozen=True):
    lease: Lease
    task: Task


class ReturnLease(_Command, frozen=True):
    lease: Lease
    kill: bool = False


class Recall(_Command, frozen=True):
    """Ask the worker of `lease` to give `task` back if it has not started."""

    lease: Lease
    task: Task


class CancelRunning(_Command, frozen=True):
    lease: Lease
    task: Task
    force: bool
    recursive: bool


class Finish(_Command, frozen=True):
    """The task ended with this reply: its results (or its own error)."""

    task: Task
    reply: m.TaskDone


class Fail(_Command, frozen=True):
    task: Task
    error: BaseException


class NewShape(_Command, frozen=True):
    """The first task of a shape (named `name`): the shell warns if no node can run it."""

    shape: Shape
    name: str


class WakeAt(_Command, frozen=True):
    """Call `tick()` at this time (on the injected clock)."""

    when: float


Command = (
    RequestLease | ConnectWorker | PushTask | ReturnLease | Recall | CancelRunning | Finish | Fail | NewShape | WakeAt
)


def shape_key(task: Task) -> Hashable:
    spec = task.spec
    p = spec.placement
    return (
        tuple(sorted(spec.resources.items())),
        tuple(sorted(spec.env_vars.items())),
        (p.kind, p.node_id, p.soft, tuple(sorted(p.selector.items())) if p.selector else ()),
        task.retries_left != 0,
    )


@dataclass(eq=False, slots=True)
class _Lost:
    """A task whose worker died with no retries left, awaiting the agent's word."""

    task: Task
    error: BaseException
    node_died: bool
    deadline: float


class LeaseClient:
    def __init__(
        self,
        clock: Clock,
        log: TaskLog,
        retry_error: Callable[[Task, bytes], bool],
        *,
        idle_s: float = IDLE_S,
        max_requests: int = MAX_REQUESTS,
        verdict_s: float = VERDICT_S,
        kill_note_s: float = KILL_NOTE_S,
        depth: int = PIPELINE_DEPTH,
        pipeline_s: float = PIPELINE_S,
        recall_s: float = RECALL_S,
    ) -> None:
        self.clock = clock
        self.log = log
        # Whether a task's error is one of its retry_exceptions (decodes it).
        self.retry_error = retry_error
        self.idle_s = idle_s
        self.max_requests = max_requests
        self.verdict_s = verdict_s
        self.kill_note_s = kill_note_s
        self.depth = depth
        self.pipeline_s = pipeline_s
        self.recall_s = recall_s
        self.shapes: dict[Hashable, Shape] = {}
        self.dead_nodes: set[bytes] = set()
        # The memory monitor's reasons, by (agent, lease id), until they expire.
        self.kill_notes: dict[tuple[str, int], tuple[str, float]] = {}
        # Leases asked back before their worker was reached (granted, not yet
        # connected): applied once it is.
        self.reclaims: set[tuple[str, int]] = set()
        self.lost: dict[tuple[str, int], _Lost] = {}
        self._wake: float | None = None

    # -- events -----------------------------------------------------------

    def submit(self, task: Task) -> list[Command]:
        out: list[Command] = []
        sid = self.log.stimulus()
        if task.cancelled:
            self._cancelled(task, out, sid)
            return out
        key = shape_key(task)
        shape = self.shapes.get(key)
        if shape is None:
            spec = task.spec
            shape = self.shapes[key] = Shape(key, spec.resources, spec.env_vars, spec.placement, task.retries_left != 0)
            out.append(NewShape(shape, spec.name))
        task.shape = shape
        shape.queue.append(task)
        self._pump(shape, out, sid)
        if task.lease is None and not task.done:
            self.log.append(Rec(task.task_id, story.LEASE_REQUESTED, sid, self.clock(), shape.requests))
        return out

    def lease_granted(self, shape: Shape, agent: str, grant: m.LeaseGranted) -> list[Command]:
        shape.requests -= 1
        lease = Lease(grant.lease_id, grant.worker_id, grant.address, grant.node_id, agent, list(grant.gpu_ids), shape)
        if not shape.queue:
            # Asked for during a burst that is over: hand it straight back so
            # other owners' work is not held up behind an idle lease.
            return [ReturnLease(lease)]
        return [ConnectWorker(lease)]

    def lease_redirected(self, shape: Shape, agent: str, node_id: bytes, address: str) -> list[Command]:
        """The agent named another node, which has the resources free."""
        if node_id in self.dead_nodes:
            return [RequestLease(shape, agent, True, agent)]  # one we know is gone: stay
        return [RequestLease(shape, address, True, agent)]

    def redirect_unreachable(self, shape: Shape, fallback: str) -> list[Command]:
        return [RequestLease(shape, fallback, True, fallback)]  # stay there after all

    def lease_failed(self, shape: Shape, agent: str, error: BaseException, lost: bool) -> list[Command]:
        """No lease: the agent refused (`lost` False) or its connection broke."""
        if lost and agent != LOCAL:
            # The other node went away while we waited: ask our own agent again.
            return [RequestLease(shape, LOCAL, False, LOCAL)]
        shape.requests -= 1
        out: list[Command] = []
        if isinstance(error, exc.QuotaExceededError) and shape.requests > 0:
            # One request too many for the job's quota of queued requests on
            # that node: the ones still out will serve the queue.
            return out
        sid = self.log.stimulus()
        while shape.queue:
            task = shape.queue.popleft()
            self._fail(task, error, out, sid)
        return out

    def worker_connected(self, lease: Lease) -> list[Command]:
        out: list[Command] = []
        shape = lease.shape
        lease.idle_since = self.clock()
        if self.reclaims:
            key = (lease.agent, lease.lease_id)
            if key in self.reclaims:
                self.reclaims.discard(key)
                lease.reclaimed = True  # one task at most, then back
        shape.idle.append(lease)
        self._pump(shape, out, self.log.stimulus())
        if shape.idle:
            self._wake_at(lease.idle_since + self.idle_s, out)
        return out

    def worker_unreachable(self, lease: Lease) -> list[Command]:
        out: list[Command] = [ReturnLease(lease, kill=True)]
        self._pump(lease.shape, out, self.log.stimulus())
        return out

    def task_replied(self, lease: Lease, task: Task, reply: m.TaskDone) -> list[Command]:
        out: list[Command] = []
        sid = self.log.stimulus()
        shape = lease.shape
        if reply.recalled:
            # Given back unrun (`Recall`): first in line again, no attempt spent.
            asked = task.recalled
            now = self._release(lease, task, out)
            if not asked:
                # Only a worker gone wrong says so unasked: run it again
                # would let it bounce the task forever.
                self._fail(task, exc.RaySystemError(
                    f"the worker running {task.spec.name}() gave it back unasked"), out, sid)
            elif task.cancelled:
                self._cancelled(task, out, sid)
            else:
                shape.queue.appendleft(task)
            # Not pipelined back onto this lease (it was asked back from behind
            # one running long): only taken by it if it is idle now.
            self._pump(shape, out, sid)
            if not lease.tasks:
                self._wake_at(now + self.idle_s, out)
            return out
        if lease.tasks and lease.tasks[0] is task:
            self._ran(shape, self.clock() - lease.since)
        now = self._release(lease, task, out)
        if reply.error is None:
            self.log.append(Rec(task.task_id, story.FINISHED, sid, now))
            out.append(Finish(task, reply))
        elif task.may_retry_on_error() and self.retry_error(task, reply.error):
            task.next_attempt()
            shape.queue.appendleft(task)
            self.log.record(task.task_id, story.RETRIED, sid, "it raised one of its retry_exceptions")
        else:
            self.log.record(task.task_id, story.FAILED, sid, "it raised")
            out.append(Finish(task, reply))
        self._next(lease, out, sid, now)
        return out

    def push_refused(self, lease: Lease, task: Task, error: BaseException) -> list[Command]:
        """The task could not be sent to its worker (larger than a frame may
        be): it fails, never retried, since it would not fit the next time
        either; the lease takes the next task."""
        out: list[Command] = []
        sid = self.log.stimulus()
        now = self._release(lease, task, out)
        self._fail(task, error, out, sid)
        self._next(lease, out, sid, now)
        return out

    def _release(self, lease: Lease, task: Task, out: list[Command]) -> float:
        """One of the lease's tasks is over: the next one runs from now (which
        is returned), or the lease is idle (or returned, if reclaimed)."""
        shape = lease.shape
        now = self.clock()
        if self._take(lease, task):
            lease.since = now
        if lease.tasks:
            return now
        shape.busy.discard(lease)
        lease.idle_since = now
        if lease.reclaimed:
            out.append(ReturnLease(lease))
        else:
            shape.idle.append(lease)
        return now

    def _take(self, lease: Lease, task: Task) -> bool:
        """Takes `task` off `lease`; whether it was the one running."""
        tasks = lease.tasks
        first = bool(tasks) and tasks[0] is task
        if len(tasks) > 1:
            lease.shape.piped -= 1
        if first:
            del tasks[0]
        else:
            tasks.remove(task)
        task.lease = None
        task.recalled = False
        return first

    def _ran(self, shape: Shape, took: float) -> None:
        """A task of `shape` took `took`: one long task stops pipelining at
        once; many short ones bring it back."""
        run = shape.run_s
        shape.run_s = took if took > run else run + (took - run) / 8

    def _next(self, lease: Lease, out: list[Command], sid: int, now: float) -> None:
        """A task of `lease` ended: the next queued tasks (up to the depth, on
        this lease), or a wake-up to return idle leases."""
        shape = lease.shape
        if shape.queue:
            self._pump(shape, out, sid)
            if shape.queue and lease.tasks:
                self._fill(lease, out, sid)
        else:
            wake = self._wake
            if wake is None or now + self.idle_s < wake:
                self._wake_at(now + self.idle_s, out)

    def worker_lost(self, lease: Lease, task: Task, error: BaseException, node_died: bool) -> list[Command]:
        """The worker died (or its connection broke) while running `task`."""
        out: list[Command] = []
        if not lease.dead:  # once, whichever of its tasks tells first
            lease.dead = True
            out.append(ReturnLease(lease, kill=True))
            # The one that ran: answers come in order, and all that came are
            # read before the connection's end, so the rest had not started.
            lease.ran = lease.tasks[0] if lease.tasks else None
        sid = self.log.stimulus()
        shape = lease.shape
        self._take(lease, task)
        if not lease.tasks:
            shape.busy.discard(lease)
        if task.cancelled:
            self._cancelled(task, out, sid)
        elif task is not lease.ran:
            # It waited behind the one that ran (pipelined): first in line
            # again, no attempt spent.
            shape.queue.appendleft(task)
        elif task.retries_left != 0:
            task.next_attempt()
            shape.queue.appendleft(task)
            self.log.record(task.task_id, story.RETRIED, sid, f"its worker died: {error}")
        else:
            key = (lease.agent, lease.lease_id)
            note = self.kill_notes.pop(key, None)
            if note is not None:
                self._fail(task, _oom(task, note[0]), out, sid)
            else:
                deadline = self.clock() + self.verdict_s
                self.lost[key] = _Lost(task, error, node_died, deadline)
                self._wake_at(deadline, out)
        self._pump(shape, out, sid)
        return out

    def lease_killed(self, agent: str, lease_id: int, reason: str) -> list[Command]:
        """The agent's memory monitor killed the worker of this lease."""
        out: list[Command] = []
        key = (agent, lease_id)
        lost = self.lost.pop(key, None)
        if lost is not None:
            self._fail(lost.task, _oom(lost.task, reason), out, self.log.stimulus())
            return out
        expires = self.clock() + self.kill_note_s
        self.kill_notes[key] = (reason, expires)
        self._wake_at(expires, out)
        return out

    def lease_reclaimed(self, agent: str, lease_id: int) -> list[Command]:
        """The agent wants the lease back for a request that waits: an idle
        one goes now, a busy one once its task is done (not reused)."""
        out: list[Command] = []
        for shape in self.shapes.values():
            for lease in shape.idle:
                if lease.lease_id == lease_id and lease.agent == agent:
                    shape.idle.remove(lease)
                    out.append(ReturnLease(lease))
                    return out
            for lease in shape.busy:
                if lease.lease_id == lease_id and lease.agent == agent:
                    lease.reclaimed = True
                    return out
        # Not connected yet (or returned already, the message crossing ours):
        # kept for worker_connected, within a bound.
        if len(self.reclaims) > 1024:
            self.reclaims.clear()
        self.reclaims.add((agent, lease_id))
        return out

    def cancel(self, task: Task, force: bool, recursive: bool) -> list[Command]:
        """`task.cancelled` is set; it may be queued, running, or not yet submitted."""
        out: list[Command] = []
        sid = self.log.stimulus()
        lease = task.lease
        if lease is not None:
            out.append(CancelRunning(lease, task, force, recursive))
            return out
        shape = task.shape
        if shape is not None and task in shape.queue:
            shape.queue.remove(task)
        self._cancelled(task, out, sid)
        return out

    def node_died(self, node_id: bytes) -> None:
        self.dead_nodes.add(node_id)

    def tick(self) -> list[Command]:
        out: list[Command] = []
        self._wake = None
        now = self.clock() + SLACK_S
        sid = self.log.stimulus()
        for key, lost in list(self.lost.items()):
            if lost.deadline <= now:
                del self.lost[key]
                self._fail(lost.task, died_error(lost.task, lost.error, lost.node_died), out, sid)
        for key, (_, expires) in list(self.kill_notes.items()):
            if expires <= now:
                del self.kill_notes[key]
        recall_at = [self._recall_stalled(shape, out, now) for shape in self.shapes.values() if shape.piped]
        for shape in self.shapes.values():
            if shape.idle and not shape.queue:
                keep = []
                for lease in shape.idle:
                    if lease.idle_since + self.idle_s <= now:
                        out.append(ReturnLease(lease))
                    else:
                        keep.append(lease)
                shape.idle = keep
        wake = min(
            [lost.deadline for lost in self.lost.values()]
            + [expires for _, expires in self.kill_notes.values()]
            + [lease.idle_since + self.idle_s for s in self.shapes.values() for lease in s.idle]
            + [when for when in recall_at if when is not None],
            default=None,
        )
        if wake is not None:
            self._wake_at(wake, out)
        return out

    # -- invariants -------------------------------------------------------

    def validate(self) -> None:
        for shape in self.shapes.values():
            assert shape.requests >= 0, shape
            assert not (set(shape.idle) & shape.busy), "a lease both idle and busy"
            assert not (shape.queue and shape.idle), "queued tasks next to an idle lease"
            for lease in shape.busy:
                assert lease.tasks and all(t.lease is lease for t in lease.tasks), lease
                assert lease.shape is shape
            assert shape.piped == sum(len(lease.tasks) - 1 for lease in shape.busy), shape
            for lease in shape.idle:
                assert not lease.tasks, lease
            for task in shape.queue:
                assert task.lease is None and not task.done and task.resolved, task
        for lost in self.lost.values():
            assert not lost.task.done, lost

    # -- internals --------------------------------------------------------

    def _pump(self, shape: Shape, out: list[Command], sid: int) -> None:
        queue, idle = shape.queue, shape.idle
        while queue and idle:
            lease = idle.pop()
            task = queue.popleft()
            if task.cancelled:
                self._cancelled(task, out, sid)
                idle.append(lease)
                continue
            self._assign(lease, task, out, sid)
        want = min(len(queue), self.max_requests) - shape.requests
        if want > 0:
            self._make_room(shape, out)
            for _ in range(want):
                shape.requests += 1
                out.append(RequestLease(shape, LOCAL, False, LOCAL))

    def _assign(self, lease: Lease, task: Task, out: list[Command], sid: int) -> None:
        now = self.clock()
        shape = lease.shape
        if lease.tasks:
            shape.piped += 1
        else:
            lease.since = now
            shape.busy.add(lease)
        lease.tasks.append(task)
        task.lease = lease
        if lease.fresh:
            lease.fresh = False
            self.log.record(task.task_id, story.GRANTED, sid, ("node", lease.node_id, "lease", lease.lease_id))
        self.log.append(Rec(task.task_id, story.PUSHED, sid, now, lease.worker_id))
        out.append(PushTask(lease, task))

    def _fill(self, lease: Lease, out: list[Command], sid: int) -> None:
        """Pipelines queued tasks onto `lease`, busy, up to the depth: if its
        shape's tasks are short and may be run again (a task behind one whose
        worker dies is), and are not generators (whose items stream while
        they run, however long)."""
        shape = lease.shape
        run = shape.run_s
        if not (0 <= run <= self.pipeline_s and shape.retriable) or lease.reclaimed or lease.dead:
            return
        if lease.tasks and lease.tasks[0].spec.num_returns < 0:
            return  # nothing waits behind a generator, however short its shape's tasks
        queue = shape.queue
        # No more than its share of the shape's work, counting the leases
        # asked for and not yet granted: ten 1 ms tasks on two leases would
        # otherwise line up eight on the first to answer, the other idle
        # (10 tasks x 100 puts from workers: 0.79x of the tree before).
        on_leases = len(shape.busy) + shape.piped
        leases = len(shape.busy) + len(shape.idle) + shape.requests
        share = -(-(len(queue) + on_leases) // leases)
        cap = min(self.depth, share)
        added = False
        while queue and len(lease.tasks) < cap:
            task = queue[0]
            if task.cancelled:
                queue.popleft()
                self._cancelled(task, out, sid)
                continue
            if task.retries_left == 0 or task.spec.num_returns < 0:
                break
            queue.popleft()
            self._assign(lease, task, out, sid)
            added = True
        if added:
            self._wake_at(lease.since + self.recall_s, out)

    def _recall_stalled(self, shape: Shape, out: list[Command], now: float) -> float | None:
        """Asks back the tasks waiting behind one that has run for recall_s;
        returns when the next such wait would pass it, if any waits."""
        soonest = None
        for lease in shape.busy:
            if len(lease.tasks) < 2 or lease.dead:
                continue
            due = lease.since + self.recall_s
            if due > now:
                soonest = due if soonest is None or due < soonest else soonest
                continue
            # Last first: each comes back to the queue's front, so they keep their order.
            for task in reversed(lease.tasks[1:]):
                if not task.recalled:
                    task.recalled = True
                    out.append(Recall(lease, task))
        return soonest

    def _make_room(self, shape: Shape, out: list[Command]) -> None:
        """Hands back idle leases of other shapes that hold what `shape` needs:
        they would otherwise block it until the idle sweep."""
        for other in self.shapes.values():
            if other is shape or not other.idle or other.queue:
                continue
            if other.resources.keys().isdisjoint(shape.resources):
                continue
            for lease in other.idle:
                out.append(ReturnLease(lease))
            other.idle = []

    def _wake_at(self, when: float, out: list[Command]) -> None:
        if self._wake is None or when < self._wake:
            self._wake = when
            out.append(WakeAt(when))

    def _fail(self, task: Task, error: BaseException, out: list[Command], sid: int) -> None:
        self.log.record(task.task_id, story.FAILED, sid, type(error).__name__)
        out.append(Fail(task, error))

    def _cancelled(self, task: Task, out: list[Command], sid: int) -> None:
        self.log.record(task.task_id, story.CANCELLED, sid)
        out.append(Fail(task, exc.TaskCancelledError(task.task_id.hex())))


def _oom(task: Task, reason: str) -> BaseException:
    return exc.OutOfMemoryError(
        f"Task {task.spec.name}() was killed for memory: {reason}. "
        f"No retries left (max_retries). Use less memory per task, or fewer tasks at once "
        f"(more num_cpus, or a memory resource per task that covers what it uses)."
    )


def died_error(task: Task, error: BaseException, node_died: bool) -> BaseException:
    name = task.spec.name
    if node_died:
        return exc.NodeDiedError(f"{name}() was running on a node that died ({error}); no retries left (max_retries).")
    return exc.WorkerCrashedError(
        f"The worker running {name}() died unexpectedly ({error}); no retries left (max_retries)."
    )
