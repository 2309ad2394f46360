"""The node agent's lease table: which worker runs whose tasks, without I/O.

Owners ask for a lease on a worker with a resource shape. A request is
granted when the shape fits the node's free resources; it then takes an
idle worker with the right environment or asks for a new one to be forked.
Leases are returned when the owner has no more work for them, and a worker
blocked in `get` gives its resources back until it resumes, so nested tasks
cannot deadlock the node. Every method returns the commands the agent must
carry out.

Workers are never shared between jobs: idle workers are pooled by (job,
environment). A spare worker (job 0: prestarted, or started for a request
that went away) has run nobody's code, so the first job that asks for its
environment may take it; from its first lease on it is that job's, and it
is stopped when that job ends.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

from manta._private.scheduling.bundles import base_of, charge
from manta._private.scheduling.resources import UNIT, ResourceSet, add, fits, subtract

PoolKey = tuple[tuple[str, str], ...]  # the worker's environment variables
# Idle workers and starts are kept by (job id, environment): 0 is no job yet.
JobKey = tuple[int, PoolKey]
SPARE = 0
# Ended jobs remembered, so a lease of theirs given back later stops its worker.
KEEP_ENDED_JOBS = 4096
# Workers of one kind that may die before registering, in a row, before the
# requests waiting for one fail instead of waiting for yet another.
START_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Grant:
    request_id: Hashable
    lease_id: int
    worker_id: bytes
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StartWorker:
    pool_key: PoolKey
    job_id: int = SPARE  # whose request it is started for (told back in worker_started)


@dataclass(frozen=True, slots=True)
class StopWorker:
    worker_id: bytes


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Ask the owner of a task lease to give it back after its current task
    instead of reusing it: a request that does not fit waits for it."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the request with an error: no worker could be started for it."""

    request_id: Hashable
    why: str


Command = Grant | StartWorker | StopWorker | Reclaim | Refuse


@dataclass(eq=False, slots=True)
class Request:
    request_id: Hashable
    owner: Hashable
    resources: ResourceSet
    pool_key: PoolKey
    for_actor: bool = False
    # Must be free too for the grant, but is not taken (an actor's placement).
    gate: ResourceSet = field(default_factory=dict)
    # What it holds once granted: its resources and, in a bundle, the other
    # names Ray counts it against (`bundles.charge`).
    taken: ResourceSet = field(default_factory=dict)
    job_id: int = SPARE

    def needs_free(self) -> ResourceSet:
        if not self.gate:
            return self.resources
        need = dict(self.resources)
        add(need, self.gate)
        return need


@dataclass(eq=False, slots=True)
class Lease:
    lease_id: int
    worker_id: bytes
    owner: Hashable
    resources: ResourceSet
    for_actor: bool
    blocked: bool = False
    gpu_ids: tuple[int, ...] = ()
    reclaimed: bool = False  # its owner was asked to give it back


@dataclass(eq=False, slots=True)
class Worker:
    worker_id: bytes
    pool_key: PoolKey
    lease_id: int | None = None
    job_id: int = SPARE  # the job whose code it ran (SPARE: none yet)

    @property
    def key(self) -> JobKey:
        return (self.job_id, self.pool_key)


@dataclass
class LeaseTable:
    total: ResourceSet
    max_idle_workers: int = 4
    # Spare workers (of the default environment) kept ready for the next
    # job: refilled when a job ends and its workers go.
    spares: int = 0
    # Spares the fork server starts by itself at start, before anyone asks.
    prestarted: int = 0
    available: ResourceSet = field(init=False)
    pending: collections.deque[Request] = field(default_factory=collections.deque)
    # Requests whose resources are reserved, waiting for a worker to start.
    starting: dict[JobKey, collections.deque[tuple[Request, int]]] = field(default_factory=dict)
    idle: dict[JobKey, list[bytes]] = field(default_factory=dict)
    workers: dict[bytes, Worker] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # Free capacity of each GPU, in units: tasks get specific device ids.
    gpu_free: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.total = dict(self.total)
        self.available = dict(self.total)
        self.reserved: ResourceSet = {}
        self.gpu_free = [UNIT] * (self.total.get("GPU", 0) // UNIT)
        self.ended: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.spares_starting = self.prestarted
        self.lost_starts: dict[JobKey, int] = {}  # in a row, by kind; cleared when one registers

    # -- events -----------------------------------------------------------

    def request(self, req: Request) -> list[Command]:
        self.pending.append(req)
        return self._schedule()

    def worker_started(self, worker_id: bytes, pool_key: PoolKey, job_id: int = SPARE) -> list[Command]:
        """A worker registered; `job_id` is the one its StartWorker named."""
        worker = self.workers[worker_id] = Worker(worker_id, pool_key)
        self.lost_starts.pop((job_id, pool_key), None)
        if job_id == SPARE and pool_key == ():
            self.spares_starting = max(0, self.spares_starting - 1)
        waiting = self.starting.get((job_id, pool_key))
        if waiting:
            req, lease_id = waiting.popleft()
            if not waiting:
                del self.starting[(job_id, pool_key)]
            # A lease that came into being while others wait may be asked
            # back too (nothing else may happen here for a while).
            return [self._bind(req, lease_id, worker_id), *self._ask_back()]
        # Its request went away before it came: it ran nothing, so it is a spare.
        self.idle.setdefault(worker.key, []).append(worker_id)
        return self._trim_idle()

    def start_lost(self, job_id: int, pool_key: PoolKey) -> list[Command]:
        """A worker started for `(job_id, pool_key)` ended before it registered
        (it could not reach the agent, say). The requests waiting for it get
        another; after START_RETRIES such losses in a row they fail. Without
        this they waited forever: a prestarted spare that died at start left
        an actor pending for good (1 start in 10 under load, in one test)."""
        key = (job_id, pool_key)
        spare = key == (SPARE, ())
        if spare:
            self.spares_starting = max(0, self.spares_starting - 1)
        waiting = self.starting.get(key)
        if not waiting or (spare and len(waiting) <= self.spares_starting):
            return []
        lost = self.lost_starts[key] = self.lost_starts.get(key, 0) + 1
        if lost <= START_RETRIES:
            if spare:
                self.spares_starting += 1
            return [StartWorker(pool_key, job_id)]
        del self.starting[key], self.lost_starts[key]
        why = f"{lost} workers in a row ended before they registered with the node (see logs/workers.log)"
        out: list[Command] = []
        for req, _ in waiting:
            add(self.available, req.taken)
            out.append(Refuse(req.request_id, why))
        return out + self._schedule()

    def return_lease(self, lease_id: int, kill: bool = False) -> list[Command]:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return []
        self._release(lease)
        out: list[Command] = []
        worker = self.workers.get(lease.worker_id)
        if worker is not None:
            worker.lease_id = None
            if kill or lease.for_actor or worker.job_id in self.ended:
                del self.workers[lease.worker_id]
                out.append(StopWorker(lease.worker_id))
            else:
                self.idle.setdefault(worker.key, []).append(lease.worker_id)
        out += self._schedule()
        out += self._trim_idle()
        return out

    def worker_died(self, worker_id: bytes) -> list[Command]:
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        idle = self.idle.get(worker.key)
        if idle and worker_id in idle:
            idle.remove(worker_id)
        if worker.lease_id is not None:
            lease = self.leases.pop(worker.lease_id, None)
            if lease is not None:
                self._release(lease)
        return self._schedule()

    def start_failed(self, pool_key: PoolKey) -> tuple[list[Hashable], list[Command]]:
        """Workers of this environment cannot start (its interpreter fails):
        the requests reserved for one give their resources back and fail.
        Returns their request ids, and what the freed resources allow."""
        waiting: list[tuple[Request, int]] = []
        for key in [k for k in self.starting if k[1] == pool_key]:
            waiting += self.starting.pop(key)
        for req, _ in waiting:
            add(self.available, req.taken)  # what it took, a bundle's other names too
        return [req.request_id for req, _ in waiting], self._schedule()

    def owner_gone(self, owner: Hashable) -> list[Command]:
        """The owner disconnected: drop its requests, stop its leased workers."""
        self.pending = collections.deque(r for r in self.pending if r.owner != owner)
        out: list[Command] = []
        for key, waiting in list(self.starting.items()):
            keep: collections.deque[tuple[Request, int]] = collections.deque()
            for req, lease_id in waiting:
                if req.owner == owner:
                    add(self.available, req.taken)
                else:
                    keep.append((req, lease_id))
            # The worker being started joins the idle pool when it arrives.
            if keep:
                self.starting[key] = keep
            else:
                del self.starting[key]
        for lease in [lease for lease in self.leases.values() if lease.owner == owner]:
            out += self.return_lease(lease.lease_id, kill=True)
        return out + self._schedule()

    def job_ended(self, job_id: int) -> list[Command]:
        """The job's driver is gone: its idle workers stop, and so will the
        ones its leases still hold when they come back (a detached actor of
        the job keeps its own). Spares are started to replace them."""
        if job_id == SPARE:
            return []
        self.ended[job_id] = None
        while len(self.ended) > KEEP_ENDED_JOBS:
            self.ended.popitem(last=False)
        out: list[Command] = []
        for key in [k for k in self.idle if k[0] == job_id]:
            for wid in self.idle.pop(key):
                del self.workers[wid]
                out.append(StopWorker(wid))
        have = len(self.idle.get((SPARE, ()), ())) + self.spares_starting
        for _ in range(self.spares - have):
            self.spares_starting += 1
            out.append(StartWorker(()))
        return out

    def blocked(self, worker_id: bytes) -> list[Command]:
        lease = self._lease_of(worker_id)
        if lease is None or lease.blocked:
            return []
        lease.blocked = True
        add(self.available, _cpu_only(lease.resources))
        return self._schedule()

    def unblocked(self, worker_id: bytes) -> list[Command]:
        lease = self._lease_of(worker_id)
        if lease is None or not lease.blocked:
            return []
        lease.blocked = False
        # May overcommit for a moment: the worker resumes regardless.
        subtract(self.available, _cpu_only(lease.resources))
        return []

    # -- queries ----------------------------------------------------------

    # -- placement group bundles -----------------------------------------

    def reserve(self, need: ResourceSet) -> bool:
        """Sets resources aside for bundles (phase one); False if they are not free."""
        if not fits(need, self.available):
            return False
        subtract(self.available, need)
        add(self.reserved, need)
        return True

    def unreserve(self, need: ResourceSet) -> list[Command]:
        add(self.available, need)
        subtract(self.reserved, need)
        return self._schedule()

    def add_resources(self, extra: ResourceSet) -> list[Command]:
        """New resources appear (a committed bundle's own names)."""
        add(self.total, extra)
        add(self.available, extra)
        return self._schedule()

    def remove_resources(self, gone: ResourceSet) -> list[Command]:
        """Resources disappear (a removed bundle's names). As in Ray, the
        workers using them are stopped: their leases cannot outlive what
        they hold, or the node's free count would go below zero."""
        subtract(self.total, gone)
        subtract(self.available, gone)  # below zero by what the leases hold...
        # A grant whose worker is still starting would run in the removed
        # bundle once the worker comes (an actor kept answering in a removed
        # group): it gives back what it took and waits again, for names
        # that no longer exist, as a request for a removed bundle does.
        for key, waiting in list(self.starting.items()):
            for req, lease_id in [x for x in waiting if any(k in gone for k in x[0].taken)]:
                waiting.remove((req, lease_id))
                add(self.available, req.taken)
                req.taken = {}
                self.pending.append(req)
            if not waiting:
                del self.starting[key]  # its worker joins the idle pool when it comes
        out: list[Command] = []
        for lease in [x for x in self.leases.values() if any(k in gone for k in x.resources)]:
            out += self.return_lease(lease.lease_id, kill=True)  # ...and back to zero here
        for d in (self.total, self.available):
            for k in [k for k, v in d.items() if v == 0 and k in gone]:
                del d[k]
        return out

    def pending_demands(self) -> list[tuple[dict[str, float], int]]:
        """Shapes of the requests still waiting for resources, with counts."""
        counts: dict[tuple[tuple[str, int], ...], int] = {}
        for req in self.pending:
            key = tuple(sorted(req.resources.items()))
            counts[key] = counts.get(key, 0) + 1
        return [({k: v / UNIT for k, v in key}, n) for key, n in counts.items()]

    def validate(self) -> None:
        used: ResourceSet = {}
        for lease in self.leases.values():
            add(used, lease.resources)
            if lease.blocked:
                subtract(used, _cpu_only(lease.resources))
        for waiting in self.starting.values():
            for req, _ in waiting:
                add(used, req.taken)
        add(used, self.reserved)
        for k, total in self.total.items():
            assert self.available.get(k, 0) + used.get(k, 0) == total, (k, self.available, used)
        for wid, w in self.workers.items():
            in_idle = wid in self.idle.get(w.key, [])
            assert in_idle == (w.lease_id is None), f"worker {wid!r} idle={in_idle} lease={w.lease_id}"

    # -- internals --------------------------------------------------------

    def _lease_of(self, worker_id: bytes) -> Lease | None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.lease_id is None:
            return None
        return self.leases.get(worker.lease_id)

    def _schedule(self) -> list[Command]:
        out: list[Command] = []
        still: collections.deque[Request] = collections.deque()
        pending = self.pending
        if len(pending) > 1 and self.leases:
            # Owners holding fewer leases go first (in arrival order among
            # equals), so one owner's stream of tasks cannot keep another
            # waiting behind its queue of requests.
            held = collections.Counter(lease.owner for lease in self.leases.values() if any(lease.resources.values()))
            if len({held[r.owner] for r in pending}) > 1:
                pending = collections.deque(sorted(pending, key=lambda r: held[r.owner]))
        while pending:
            req = pending.popleft()
            taken = charge(req.resources, self.available, req.gate)
            if taken is None:
                still.append(req)
                continue
            req.taken = taken
            subtract(self.available, taken)
            lease_id = next(self._ids)
            # The job's own worker of this environment, else a spare one.
            idle = self.idle.get((req.job_id, req.pool_key)) or self.idle.get((SPARE, req.pool_key))
            if idle:
                out.append(self._bind(req, lease_id, idle.pop()))
            elif req.pool_key == () and self.spares_starting > len(self.starting.get((SPARE, ()), ())):
                # A spare is on its way (prestarted, or replacing an ended
                # job's workers): it comes sooner than a worker forked now,
                # and the node keeps one process fewer. Without this the
                # first task of `init()` forked a third worker on 2 CPUs
                # (33 MB of RSS) while the two prestarted ones registered.
                self.starting.setdefault((SPARE, ()), collections.deque()).append((req, lease_id))
            else:
                self.starting.setdefault((req.job_id, req.pool_key), collections.deque()).append((req, lease_id))
                out.append(StartWorker(req.pool_key, req.job_id))
        self.pending = still
        return out + self._ask_back()

    def _ask_back(self) -> list[Command]:
        """Leases asked back for the first request that waits and can be
        helped (an owner's own leases are its lease client's business: it
        reuses them in order)."""
        for waiting in itertools.islice(self.pending, 8):
            asked = self._reclaim(waiting)
            if asked:
                return asked
        return []

    def _reclaim(self, waiting: Request) -> list[Command]:
        """Owners reuse a task lease for their next task of its shape, so a
        steady stream of them would hold a node's resources forever and
        starve everyone else (another job, an actor being placed). When the
        oldest request waits, the task leases it needs are asked back: each
        returns once its current task is done, and the queue goes in order."""
        need = waiting.needs_free()
        if not fits(need, self.total):
            return []  # it can never fit here: taking leases back would not help
        short = {k: v - self.available.get(k, 0) for k, v in need.items() if v > self.available.get(k, 0)}
        for lease in self.leases.values():
            if lease.reclaimed:
                subtract(short, _held(lease))
        out: list[Command] = []
        for lease in self.leases.values():
            if not any(v > 0 for v in short.values()):
                break
            if lease.for_actor or lease.reclaimed or lease.owner == waiting.owner:
                continue
            held = _held(lease)
            if not any(held.get(k, 0) > 0 and v > 0 for k, v in short.items()):
                continue
            lease.reclaimed = True
            subtract(short, held)
            out.append(Reclaim(lease.lease_id))
        return out

    def _bind(self, req: Request, lease_id: int, worker_id: bytes) -> Grant:
        gpu_ids = self._take_gpus(req.resources.get("GPU", 0))
        self.leases[lease_id] = Lease(
            lease_id, worker_id, req.owner, req.taken, req.for_actor, gpu_ids=gpu_ids
        )
        worker = self.workers[worker_id]
        worker.lease_id = lease_id
        worker.job_id = req.job_id  # from now on it is this job's
        return Grant(req.request_id, lease_id, worker_id, gpu_ids)

    def _take_gpus(self, units: int) -> tuple[int, ...]:
        """Whole GPUs for whole requests; a fraction shares one device."""
        if units <= 0 or not self.gpu_free:
            return ()
        if units < UNIT:
            # Best fit: the fullest device that still has room.
            fitting = [i for i, free in enumerate(self.gpu_free) if free >= units]
            if not fitting:
                return ()
            best = min(fitting, key=lambda i: self.gpu_free[i])
            self.gpu_free[best] -= units
            return (best,)
        ids = [i for i, free in enumerate(self.gpu_free) if free == UNIT][: units // UNIT]
        for i in ids:
            self.gpu_free[i] = 0
        return tuple(ids)

    def _release(self, lease: Lease) -> None:
        add(self.available, lease.resources)
        if lease.blocked:
            subtract(self.available, _cpu_only(lease.resources))
        units = lease.resources.get("GPU", 0)
        for i in lease.gpu_ids:
            self.gpu_free[i] += units if units < UNIT else UNIT

    def _trim_idle(self) -> list[Command]:
        out: list[Command] = []
        count = sum(len(v) for v in self.idle.values())
        # Drop idle workers of other environments first, spares last (any
        # job may use them), the oldest first within each.
        for key in sorted(self.idle, key=lambda k: (k[1] == (), k[0] == SPARE)):
            ids = self.idle[key]
            while ids and count > self.max_idle_workers:
                wid = ids.pop(0)
                del self.workers[wid]
                out.append(StopWorker(wid))
                count -= 1
        return out


def _held(lease: Lease) -> ResourceSet:
    """What a lease holds of the node now (a blocked one lends its CPUs)."""
    if not lease.blocked:
        return lease.resources
    lent = _cpu_only(lease.resources)
    return {k: v for k, v in lease.resources.items() if k not in lent}


def _cpu_only(resources: ResourceSet) -> ResourceSet:
    """What a blocked worker lends out: its CPUs, never its devices (in a
    placement group, its bundle's CPUs, to the group's other tasks)."""
    return {k: v for k, v in resources.items() if v and base_of(k) == "CPU"}
