"""One simulated node's decisions, without I/O.

A simulated node takes the messages a real agent and its workers take,
and answers them as they would, without a worker process: leases come
from the real `LeaseTable` (a worker it asks to be forked exists at once),
placement-group bundles are held and committed as the agent does, and a
task pushed to one of its "workers" is answered with a `TaskDone` after
the task's duration (its first argument when that is a plain number of
seconds, else the node's default). No argument is unpickled beyond plain
values and no user code runs: every task returns this node's id (hex), so
a driver can tell where its tasks ran.

Every method returns what to do as commands (`Reply`, `Send`,
`ResourcesChanged`); `sim/fleet.py` carries them out over the network.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime.serialization import plain_value, serialize, serialize_error
from manta._private.scheduling import leases as lt
from manta._private.scheduling.bundles import bundles_resources
from manta._private.scheduling.resources import ResourceSet, add, to_float, to_units

# Longest duration taken from a task's argument: a typo must not park a lease for hours.
MAX_DURATION_S = 600.0


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer `request` from `to` with `msg`, `after` seconds from now."""

    to: Any
    request: Any
    msg: Any
    after: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplyError:
    to: Any
    request: Any
    kind: m.ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class Send:
    to: Any
    msg: Any


@dataclass(frozen=True, slots=True)
class ResourcesChanged:
    """The head should hear of the node's free resources soon."""


CHANGED = ResourcesChanged()
Command = Reply | ReplyError | Send | ResourcesChanged


@dataclass(eq=False, slots=True)
class Hold:
    """Bundles of one placement group set aside here in one reservation (as the agent's)."""

    need: ResourceSet
    names: ResourceSet
    indices: list[int]
    committed: bool = False


def duration_of(spec: m.TaskSpec, default: float) -> float:
    """How long a task "runs": its first argument, when that is a plain
    number of seconds passed inline, else `default`."""
    if spec.actor_creation:
        return 0.0
    positional = len(spec.args) - len(spec.kwarg_names)
    if positional > 0:
        arg = spec.args[0]
    elif "duration" in spec.kwarg_names:
        arg = spec.args[positional + spec.kwarg_names.index("duration")]
    else:
        return default
    if arg.data is None:
        return default  # a ref: its value is not this node's to fetch
    try:
        value = plain_value(arg.data)
    except ValueError:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_DURATION_S:
        return float(value)
    return default


def task_done(spec: m.TaskSpec, node_id: bytes) -> m.TaskDone:
    """What a worker of this node answers: every return value is the node's id (hex)."""
    if spec.actor_creation or spec.num_returns == 0:
        return m.TaskDone(task_id=spec.task_id, returns=[])
    if spec.num_returns < 0:
        why = f"a simulated node does not run generator tasks ({spec.name})"
        return m.TaskDone(task_id=spec.task_id, returns=[], error=serialize_error(RuntimeError(why)).to_bytes(),
                          error_text=why)
    value = serialize(node_id.hex()).to_bytes()
    returns = [m.ReturnObject(object_id=ids.object_id(spec.task_id, i), data=value)
               for i in range(1, spec.num_returns + 1)]
    return m.TaskDone(task_id=spec.task_id, returns=returns)


@dataclass(eq=False)
class SimNode:
    node_id: bytes
    address: str
    resources: dict[str, float]
    duration: float = 0.0  # of a task that does not say
    labels: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        num_cpus = int(self.resources.get("CPU", 1))
        self.leases = lt.LeaseTable(to_units(self.resources), max_idle_workers=max(num_cpus, 2) + 2)
        self.pending: dict[int, tuple[Hashable, m.RequestLease]] = {}
        self.granted: dict[int, Hashable] = {}  # lease id -> owner
        self.holds: dict[bytes, list[Hold]] = {}
        self.tasks_done = 0
        self._rids = itertools.count(1)
        # When each owner's running tasks end, soonest first: an owner runs
        # as many at once as it holds leases here, and the rest after, as
        # workers run the tasks pipelined to them in order (leasing.py).
        self.ends: dict[Hashable, list[float]] = {}

    # -- what the head hears -----------------------------------------------

    def info(self) -> m.NodeInfo:
        return m.NodeInfo(node_id=self.node_id, address=self.address, alive=True, resources=self.resources,
                          available=to_float(self.leases.available), store_capacity=0, labels=dict(self.labels))

    def report(self) -> m.NodeResources:
        pending = [(shape, n) for shape, n in self.leases.pending_demands()]
        return m.NodeResources(node_id=self.node_id, pending=pending, total=to_float(self.leases.total),
                               available={k: max(0.0, v) for k, v in to_float(self.leases.available).items()})

    # -- events --------------------------------------------------------------

    def handle(self, peer: Hashable, msg: Any) -> list[Command]:
        """A message from `peer` (an owner, the head): what to do."""
        t = type(msg)
        if t is m.PushTask:
            self.tasks_done += 1
            return [Reply(peer, msg, task_done(msg.spec, self.node_id), self._run_for(peer, msg.spec))]
        if t is m.RequestLease:
            return self.request(peer, msg)
        if t is m.ReturnLease:
            if self.granted.get(msg.lease_id) is None:
                return []
            del self.granted[msg.lease_id]
            return self._run(self.leases.return_lease(msg.lease_id, msg.kill))
        if t is m.PrepareBundles:
            return self._prepare(peer, msg)
        if t is m.CommitBundles:
            return self._commit(peer, msg)
        if t is m.CancelBundles:
            return self._cancel(msg)
        if t is m.KillWorker:
            return self.worker_died(msg.worker_id, "its actor was killed")
        if t is m.JobEnded:
            return self._run(self.leases.job_ended(msg.job_id))
        if t is m.GetResources:
            return [Reply(peer, msg, m.Resources(total=self.resources, available=to_float(self.leases.available)))]
        if getattr(msg, "rid", 0):
            return [ReplyError(peer, msg, m.ErrorKind.VALUE, f"a simulated node does not answer {t.__name__}")]
        return []

    def _run_for(self, peer: Hashable, spec: m.TaskSpec) -> float:
        """How long from now a task pushed by `peer` ends: its duration, after
        it waits for a free lease of `peer`'s if all of them run one."""
        now = self.clock()
        ends = self.ends.setdefault(peer, [])
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        leases = sum(1 for owner in self.granted.values() if owner == peer)
        start = heapq.heappop(ends) if ends and len(ends) >= max(leases, 1) else now
        end = start + duration_of(spec, self.duration)
        heapq.heappush(ends, end)
        return end - now

    def request(self, peer: Hashable, msg: m.RequestLease) -> list[Command]:
        try:
            units = to_units(msg.resources)
            gate = to_units(msg.must_be_free) if msg.must_be_free else {}
        except ValueError as e:
            return [ReplyError(peer, msg, m.ErrorKind.VALUE, str(e))]
        rid = next(self._rids)
        self.pending[rid] = (peer, msg)
        req = lt.Request(rid, peer, units, tuple(sorted(msg.env_vars.items())), msg.for_actor, gate, job_id=msg.job_id)
        return self._run(self.leases.request(req))

    def owner_gone(self, peer: Hashable) -> list[Command]:
        """A connection closed: its leases and waiting requests go."""
        for lid in [lid for lid, owner in self.granted.items() if owner == peer]:
            del self.granted[lid]
        for rid in [rid for rid, (owner, _) in self.pending.items() if owner == peer]:
            del self.pending[rid]
        self.ends.pop(peer, None)
        return self._run(self.leases.owner_gone(peer))

    def worker_died(self, worker_id: bytes, why: str) -> list[Command]:
        """A simulated worker ends (its actor was killed): the head hears it, as from a real agent."""
        if worker_id not in self.leases.workers:
            return []
        for lid, lease in list(self.leases.leases.items()):
            if lease.worker_id == worker_id:
                self.granted.pop(lid, None)
        out = self._run(self.leases.worker_died(worker_id))
        return [*out, Send(None, m.WorkerExited(worker_id=worker_id, pid=0, exit_code=0, reason=why))]

    # -- placement-group bundles, as the agent holds them --------------------

    def _prepare(self, peer: Hashable, msg: m.PrepareBundles) -> list[Command]:
        need: ResourceSet = {}
        for _, bundle in msg.bundles:
            add(need, to_units(bundle))
        indices = {i for i, _ in msg.bundles}
        held = self.holds.get(msg.pg_id, [])
        if any(indices & set(h.indices) for h in held) or not self.leases.reserve(need):
            return [ReplyError(peer, msg, m.ErrorKind.RUNTIME, "resources are not free on this node any more")]
        names = to_units(bundles_resources(msg.pg_id, msg.bundles))
        self.holds.setdefault(msg.pg_id, []).append(Hold(need, names, sorted(indices)))
        return [Reply(peer, msg, m.Ack()), CHANGED]

    def _commit(self, peer: Hashable, msg: m.CommitBundles) -> list[Command]:
        prepared = [h for h in self.holds.get(msg.pg_id, []) if not h.committed]
        if not prepared:
            return [ReplyError(peer, msg, m.ErrorKind.RUNTIME, "no prepared bundles for this group")]
        out: list[Command] = []
        for h in prepared:
            h.committed = True
            out += self._run(self.leases.add_resources(h.names))
        return [*out, Reply(peer, msg, m.Ack())]

    def _cancel(self, msg: m.CancelBundles) -> list[Command]:
        holds = self.holds.get(msg.pg_id, [])
        out: list[Command] = []
        for h in [h for h in holds if not msg.indices or set(h.indices) <= set(msg.indices)]:
            holds.remove(h)
            if h.committed:
                out += self._run(self.leases.remove_resources(h.names))
            out += self._run(self.leases.unreserve(h.need))
        if not holds:
            self.holds.pop(msg.pg_id, None)
        return out

    # -- the lease table's commands ------------------------------------------

    def _run(self, commands: list[lt.Command]) -> list[Command]:
        out: list[Command] = []
        todo = list(commands)
        while todo:
            c = todo.pop(0)
            if isinstance(c, lt.StartWorker):
                # A simulated worker is ready the moment it is asked for.
                todo += self.leases.worker_started(ids.new_worker_id(), c.pool_key, c.job_id)
            elif isinstance(c, lt.Grant):
                pending = self.pending.pop(c.request_id, None)  # type: ignore[call-overload]
                if pending is None:
                    todo += self.leases.return_lease(c.lease_id)
                    continue
                peer, msg = pending
                self.granted[c.lease_id] = peer
                out.append(Reply(peer, msg, m.LeaseGranted(
                    lease_id=c.lease_id, worker_id=c.worker_id, address=self.address, pid=0,
                    node_id=self.node_id, gpu_ids=list(c.gpu_ids),
                )))
            elif isinstance(c, lt.Reclaim):
                owner = self.granted.get(c.lease_id)
                if owner is not None:
                    out.append(Send(owner, m.ReclaimLease(lease_id=c.lease_id)))
            # StopWorker: a simulated worker has no process to stop.
        out.append(CHANGED)
        return out

    def validate(self) -> None:
        self.leases.validate()
        assert set(self.granted) <= set(self.leases.leases), (self.granted, self.leases.leases)
        for holds in self.holds.values():
            assert holds, "an empty list of holds is dropped"
