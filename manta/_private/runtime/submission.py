"""Task submission: arguments, dependencies, and the I/O the lease client asks for.

A task is built on the caller's thread (its arguments serialized, its
return objects registered as owned), then handed to the I/O thread, which
waits for its ref arguments and gives it to the sans-IO `LeaseClient`. The
commands that come back are carried out here: lease requests to agents
(following their redirects), pushes to leased workers, returns, results.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta import exceptions as exc
from manta._private import ids
from manta._private.auth.quotas import pending_limit
from manta._private.protocol import messages as m
from manta._private.runtime import leasing as lc
from manta._private.runtime import story
from manta._private.runtime.context import current_task
from manta._private.runtime.errors import error_from_remote
from manta._private.runtime.generators import DynamicObjectRefGenerator
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.objects import RefStub, inline, inline_budget
from manta._private.runtime.serialization import deserialize, serialize, serialize_error
from manta._private.runtime.story import Rec
from manta._private.runtime.tasks import Task
from manta._private.transport.connection import (
    Connection,
    ConnectionLost,
    MessageTooLarge,
    PeerNodeDied,
    RemoteError,
)

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.serialization import SerializedValue

log = logging.getLogger(__name__)

FORCE_CANCEL_OF_ACTOR_CALL = (
    "force=True is not supported for actor tasks: an actor's call cannot be killed "
    "without its actor (use manta.kill() to end the actor)"
)

# Frozen, so one serves every task without a scheduling strategy.
_DEFAULT_PLACEMENT = m.Placement()


class PreparedArgs(tuple):  # type: ignore[type-arg]
    """Arguments a remote client serialized itself (client/proxy.py), passed
    as they are: its proxy never unpickles what a client sends. `pins`: the
    refs they hold, (id, owner), pinned here as `prepare_args` pins its own."""

    args: list[m.Arg]
    kwnames: list[str]
    pins: list[tuple[bytes, str]]

    @classmethod
    def of(cls, args: list[m.Arg], kwnames: list[str], pins: list[tuple[bytes, str]]) -> PreparedArgs:
        prepared = cls()
        prepared.args, prepared.kwnames, prepared.pins = args, kwnames, pins
        return prepared

    def pin(self, tasks: Submitter) -> tuple[list[m.Arg], list[str], list[bytes]]:
        with tasks.lock:
            for oid, owner in self.pins:
                tasks.refs.pin(oid, owner)
        return self.args, self.kwnames, [oid for oid, _ in self.pins]


def qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class _Named(type):
    """A stand-in class that an error is an instance of when its class, or
    one it derives from, has the stand-in's name."""

    name: str

    def __instancecheck__(cls, obj: object) -> bool:
        return any(qualified_name(k) == cls.name for k in type(obj).__mro__)


def classes_named(names: list[str]) -> tuple[type, ...]:
    """retry_exceptions given by the classes' qualified names: a remote
    client's, whose proxy never unpickles what the client sends."""
    return tuple(_Named(f"named:{n}", (), {"name": n}) for n in names)


def should_retry(task: Task, error: bytes) -> bool:
    """Whether a task's error is one it asked to be retried on (retry_exceptions)."""
    try:
        err, _ = deserialize(error)
    except Exception:
        return False
    if isinstance(err, exc.TaskCancelledError):
        return False
    if task.retry_exceptions is True:
        return True
    cause = getattr(err, "cause", err)
    return bool(task.retry_exceptions) and isinstance(cause, task.retry_exceptions)  # type: ignore[arg-type]


class Submitter:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.refs = rt.refs
        self.lock = rt.lock
        self.leases = lc.LeaseClient(rt.clock, rt.log, should_retry)
        # Held for every call into `leases`: the I/O thread makes them, and a
        # caller's thread too when it pushes a task itself (_push_from_caller).
        self.leases_lock = threading.Lock()
        # Tasks posted to the I/O thread and not yet given to `leases`: while
        # any are, a caller posts too, behind them.
        self.posted = 0
        # Unfinished tasks (plain and actor calls) by return id: for cancel().
        self.by_return: dict[bytes, Task] = {}
        # Tasks submitted here and not finished, counted while a quota bounds them.
        self.unfinished = 0
        # Unfinished tasks submitted by each task running here (guarded by the lock).
        self.children: dict[bytes, set[Task]] = {}
        self._timer: Any = None
        # The rarer commands; execute() tests for the common ones first.
        self._run: dict[type, Callable[[Any], None]] = {
            lc.RequestLease: self._request_lease,
            lc.ConnectWorker: self._connect_worker,
            lc.ReturnLease: self._return_lease,
            lc.CancelRunning: self._cancel_running,
            lc.Recall: self._recall,
            lc.Fail: lambda c: self.fail(c.task, serialize_error(c.error).to_bytes()),
            lc.NewShape: lambda c: self._warn_if_infeasible(c.shape.resources, c.name),
            lc.WakeAt: self._wake_at,
        }

    # -- building tasks (caller's thread) -----------------------------------

    def prepare_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[m.Arg], list[str], list[bytes]]:
        rt = self.rt
        if type(args) is PreparedArgs:
            return args.pin(self)
        out: list[m.Arg] = []
        pinned: list[bytes] = []
        inlined, budget = 0, inline_budget(rt.config.max_frame_bytes)
        # Values for the store, written together once all are serialized.
        stored: list[tuple[bytes, SerializedValue]] = []
        values = list(args) + list(kwargs.values())
        for i, value in enumerate(values):
            if isinstance(value, ObjectRef):
                with self.lock:
                    self.refs.pin(value._id, value._owner)
                pinned.append(value._id)
                out.append(m.Arg(object_id=value._id, owner=value._owner, cap=rt.ref_cap(value._id, value._owner)))
                continue
            label = f"argument {i}" if i < len(args) else f"keyword argument {list(kwargs)[i - len(args)]!r}"
            sv = rt.objects.serialize_value(value, f"{label} of {name}() ({type(value).__name__})")
            with self.lock:
                for r in sv.contained:
                    self.refs.pin(r._id, r._owner)
                    pinned.append(r._id)
            if not inline(sv.size, inlined, budget):
                oid = ids.object_id(rt.ids.next(), 0)
                stored.append((oid, sv))
                out.append(m.Arg(
                    object_id=oid, owner=rt.address, in_store=True, node_id=rt.node_id,
                    cap=rt.ref_cap(oid, rt.address),
                ))
            else:
                inlined += sv.size
                out.append(m.Arg(data=sv.to_bytes()))
        if stored:
            rt.objects.store_owned_all(stored)
            with self.lock:
                for oid, _ in stored:
                    self.refs.pin(oid, rt.address)
            pinned.extend(oid for oid, _ in stored)
        return out, list(kwargs), pinned

    def new_task(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        *,
        fn_id: bytes = b"",
        resources: dict[str, float] | None = None,
        env_vars: dict[str, str] | None = None,
        actor_id: bytes | None = None,
        method: str | None = None,
        retries: int = 0,
        retry_exceptions: bool | tuple[type, ...] = False,
        placement: m.Placement | None = None,
        capture: tuple[bytes, int] = (b"", 0),
        concurrency_group: str = "",
        backpressure: int = -1,
    ) -> tuple[Task, list[ObjectRef]]:
        """Serializes arguments and registers the return objects this process now owns."""
        rt = self.rt
        spec_args, kwnames, pinned = self.prepare_args(args, kwargs, name)
        task_id = rt.ids.next()
        # An actor call with num_returns=0 still gets one id, for cancel and
        # errors; a generator task one, for its end.
        n = 1 if num_returns < 0 else num_returns if actor_id is None else max(num_returns, 1)
        return_ids = ids.return_ids(task_id, n)
        with self.lock:
            for rid in return_ids:
                self.refs.add_owned(rid)
        spec = m.TaskSpec(
            task_id=task_id,
            job_id=rt.job_id,
            name=name,
            fn_id=fn_id,
            args=spec_args,
            kwarg_names=kwnames,
            num_returns=num_returns,
            owner=rt.address,
            resources=resources or {},
            actor_id=actor_id,
            method=method,
            env_vars=env_vars or {},
            namespace=rt.namespace,
            driver=rt.driver_address,
            placement=placement or _DEFAULT_PLACEMENT,
            capture_pg=capture[0],
            capture_pg_bundles=capture[1],
            code_path=rt.code_path,
            concurrency_group=concurrency_group,
            backpressure=backpressure,
        )
        # Positional: a dataclass called with keywords builds a dict for them.
        task = Task(task_id, spec, return_ids, pinned, retries, retry_exceptions)
        if num_returns == m.STREAMING:
            task.stream = rt.streams.open(task_id, return_ids[0], backpressure)
        ctx = current_task.get()
        if ctx is not None:
            task.parent = ctx.task_id
            with self.lock:
                self.children.setdefault(ctx.task_id, set()).add(task)
        return task, [ObjectRef(rid, rt.address, rt) for rid in return_ids]

    def submit_task(
        self,
        *,
        fn_id: bytes,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: bool | tuple[type, ...],
        env_vars: dict[str, str],
        placement: m.Placement | None = None,
        capture: tuple[bytes, int] = (b"", 0),
        backpressure: int = -1,
    ) -> list[ObjectRef]:
        limit = pending_limit(self.rt.identity.principal)
        if limit is not None:
            self._count_pending(limit)
        try:
            task, refs = self.new_task(
                name, args, kwargs, num_returns,
                fn_id=fn_id, resources=resources, env_vars=env_vars, retries=max_retries,
                retry_exceptions=retry_exceptions, placement=placement, capture=capture, backpressure=backpressure,
            )
        except BaseException:
            if limit is not None:
                with self.lock:
                    self.unfinished -= 1
            raise
        task.counted = limit is not None
        if not self._push_from_caller(task):
            with self.leases_lock:
                self.posted += 1
            self.rt.post(self.submit_io, task, True)
        return refs

    def _push_from_caller(self, task: Task) -> bool:
        """A task that needs no argument resolved, of a shape with a leased
        worker idle, is pushed from the caller's thread, the way a sync
        actor call is: the hand-off to the I/O thread (a self-pipe write
        and a wake-up) was 20-30 us of a 280 us sync task here
        (benchmarks/breakdown.py). Anything else goes through the I/O thread."""
        rt = self.rt
        if rt.io.on_loop():
            return False
        me = rt.address
        for arg in task.spec.args:
            if arg.object_id is not None and not (arg.in_store and arg.owner == me):
                return False
        key = lc.shape_key(task)
        with self.leases_lock:
            shape = self.leases.shapes.get(key)
            if self.posted or shape is None or not shape.idle or shape.queue:
                return False
            # Known before it is sent: its answer may come back at once.
            for rid in task.return_ids:
                self.by_return[rid] = task
            log = rt.log
            log.append(Rec(task.task_id, story.SUBMITTED, log.stimulus(), log.clock(), (task.spec.name, task.spec.job_id)))
            task.unresolved = 0
            task.resolved = True
            cmds = self.leases.submit(task)
        for c in cmds:
            if type(c) is lc.PushTask:
                self._push(c, from_caller=True)
            else:
                rt.post(self.execute, [c])
        return True

    def _count_pending(self, limit: int) -> None:
        """Counts one more pending task, or raises if the quota is reached.

        Pending tasks wait here, in their owner, until a worker is leased
        for them (the agents see at most a few lease requests per shape),
        so this is where they are bounded; the agents' bound on queued
        requests (node/quotas.py) holds an owner that skips this check."""
        with self.lock:
            if self.unfinished >= limit:
                raise exc.QuotaExceededError(
                    f"job {self.rt.job_id} would pass its quota max_pending_tasks={limit}: this process has "
                    f"{self.unfinished} tasks submitted and not finished (wait for some with ray.get or "
                    f"ray.wait before submitting more)"
                )
            self.unfinished += 1

    # -- I/O thread ---------------------------------------------------------

    def submit_io(self, task: Task, posted: bool = False) -> None:
        if posted:
            with self.leases_lock:
                self.posted -= 1
        by_return = self.by_return
        for rid in task.return_ids:
            by_return[rid] = task
        log = self.rt.log
        spec = task.spec
        log.append(Rec(task.task_id, story.SUBMITTED, log.stimulus(), log.clock(), (spec.name, spec.job_id)))
        self.resolve(task, self._ready)

    def _ready(self, task: Task) -> None:
        if not task.done:  # not failed by an argument
            with self.leases_lock:
                cmds = self.leases.submit(task)
            self.execute(cmds)

    def execute(self, commands: list[Any]) -> None:
        for c in commands:
            t = type(c)
            if t is lc.PushTask:
                self._push(c)
            elif t is lc.Finish:
                self.complete(c.task, c.reply)
            else:
                self._run[t](c)

    def resolve(self, task: Task, then: Callable[[Task], None]) -> None:
        """Waits for ref arguments, inlining small ready values, then calls then(task)."""
        me = self.rt.address
        pending = [
            i for i, arg in enumerate(task.spec.args)
            if arg.object_id is not None and not (arg.in_store and arg.owner == me)
        ]
        task.unresolved = len(pending)
        if not pending:
            task.resolved = True
            then(task)
            return
        args = list(task.spec.args)
        # What ready values may still be inlined (the rest stay refs, read from their owner).
        room = [inline_budget(self.rt.config.max_frame_bytes) - sum(len(a.data) for a in args if a.data is not None)]
        for i in pending:
            self._resolve_arg(task, args, i, then, room)

    def _resolve_arg(
        self, task: Task, args: list[m.Arg], i: int, then: Callable[[Task], None], room: list[int],
    ) -> None:
        rt = self.rt
        arg = args[i]
        oid = arg.object_id
        assert oid is not None

        def ready() -> None:
            if not rt.io.on_loop():
                rt.post(ready)
                return
            with self.lock:
                e = self.refs.get(oid)
                if e is not None and not e.state:
                    return
                if e is None:
                    err: bytes | None = serialize_error(exc.ReferenceCountingAssertionError(oid.hex())).to_bytes()
                elif e.is_error:
                    err = e.data
                else:
                    err = None
                    if e.in_store:
                        args[i] = m.Arg(
                            object_id=oid, owner=arg.owner, in_store=True, node_id=e.node_id, cap=arg.cap,
                        )
                    elif e.data is not None and len(e.data) <= room[0]:
                        room[0] -= len(e.data)
                        args[i] = m.Arg(data=e.data)
            if task.done:
                return
            if err is not None:
                self.fail(task, err)
                then(task)  # an actor's queue lets the failed call go
                return
            task.unresolved -= 1
            if task.unresolved == 0:
                task.spec = replace(task.spec, args=args)
                task.resolved = True
                then(task)

        with self.lock:
            pending = self.refs.add_waiter(oid, ready)
            e = self.refs.get(oid)
            fetch = pending and e is not None and not e.owned
        if fetch:
            rt.objects.ensure_fetch(RefStub(oid, arg.owner))
        if not pending:
            ready()

    # -- carrying out the lease client's commands ----------------------------

    def _request_lease(self, c: lc.RequestLease) -> None:
        shape = c.shape
        msg = m.RequestLease(
            job_id=self.rt.job_id, resources=shape.resources, env_vars=shape.env_vars,
            spilled=c.spilled, placement=shape.placement, retriable=shape.retriable,
        )
        if c.agent == lc.LOCAL:
            agent = self.rt.agent
            assert agent is not None
            agent.request_cb(msg, lambda reply: self._on_lease(shape, lc.LOCAL, reply))
            return

        def on_conn(conn: Any) -> None:
            if isinstance(conn, BaseException):
                with self.leases_lock:
                    cmds = self.leases.redirect_unreachable(shape, c.fallback)
                self.execute(cmds)
            else:
                conn.request_cb(msg, lambda reply: self._on_lease(shape, c.agent, reply))

        self.rt.peers.with_peer(c.agent, on_conn)

    def _on_lease(self, shape: lc.Shape, agent: str, reply: Any) -> None:
        t = type(reply)
        if t is m.LeaseGranted:
            self.rt.peers.peer_nodes[reply.address] = reply.node_id
            with self.leases_lock:
                cmds = self.leases.lease_granted(shape, agent, reply)
        elif t is m.LeaseSpill:
            # Our node is busy or lacks the resources: ask the node it named.
            # Known as that node's, its connection goes down if the node dies,
            # and the requests waiting there come back here.
            self.rt.peers.peer_nodes[reply.address] = reply.node_id
            with self.leases_lock:
                cmds = self.leases.lease_redirected(shape, agent, reply.node_id, reply.address)
        elif isinstance(reply, RemoteError):
            with self.leases_lock:
                cmds = self.leases.lease_failed(shape, agent, error_from_remote(reply), lost=False)
        else:
            with self.leases_lock:
                cmds = self.leases.lease_failed(shape, agent, reply, lost=isinstance(reply, ConnectionLost))
        self.execute(cmds)

    def _connect_worker(self, c: lc.ConnectWorker) -> None:
        lease = c.lease

        def on_conn(conn: Any) -> None:
            if isinstance(conn, BaseException):
                with self.leases_lock:
                    cmds = self.leases.worker_unreachable(lease)
                self.execute(cmds)
            else:
                lease.channel = conn
                with self.leases_lock:
                    cmds = self.leases.worker_connected(lease)
                self.execute(cmds)

        self.rt.peers.with_peer(lease.address, on_conn)

    def _push(self, c: lc.PushTask, from_caller: bool = False) -> None:
        lease, task = c.lease, c.task
        spec = task.spec
        if lease.gpu_ids or spec.gpu_ids:
            spec = replace(spec, gpu_ids=lease.gpu_ids)
        on_reply = partial(self._on_reply, lease, task)
        try:
            if not from_caller:
                lease.channel.request_cb(m.PushTask(spec=spec), on_reply)
            elif not lease.channel.request_cb_threadsafe(m.PushTask(spec=spec), on_reply):
                self.rt.post(on_reply, ConnectionLost(f"connection to {lease.channel.name} is closed"))
        except MessageTooLarge as e:
            # Arguments go to the store past INLINE_TASK_TOTAL, so only a
            # task of very many refs gets here; it fails, with the size.
            error = ValueError(f"task {spec.name}() cannot be sent: {e}")
            if from_caller:
                self.rt.post(self._refused, lease, task, error)
            else:
                self._refused(lease, task, error)

    def _refused(self, lease: lc.Lease, task: Task, error: BaseException) -> None:
        with self.leases_lock:
            cmds = self.leases.push_refused(lease, task, error)
        self.execute(cmds)

    def _on_reply(self, lease: lc.Lease, task: Task, reply: Any) -> None:
        if isinstance(reply, BaseException):
            # The worker died (or its connection broke) mid-task.
            with self.leases_lock:
                cmds = self.leases.worker_lost(lease, task, reply, isinstance(reply, PeerNodeDied))
        else:
            with self.leases_lock:
                cmds = self.leases.task_replied(lease, task, reply)
        self.execute(cmds)

    def _return_lease(self, c: lc.ReturnLease) -> None:
        lease = c.lease
        msg = m.ReturnLease(lease_id=lease.lease_id, kill=c.kill)
        if lease.agent == lc.LOCAL:
            self.rt.send_agent(msg)
        else:
            self.rt.peers.send(lease.agent, msg)

    def _recall(self, c: lc.Recall) -> None:
        c.lease.channel.send(m.CancelTask(task_id=c.task.task_id, force=False, recall=True))

    def _cancel_running(self, c: lc.CancelRunning) -> None:
        c.lease.channel.send(m.CancelTask(task_id=c.task.task_id, force=c.force, recursive=c.recursive))

    def _wake_at(self, c: lc.WakeAt) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, c.when - self.rt.clock())
        self._timer = self.rt.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        with self.leases_lock:
            cmds = self.leases.tick()
        self.execute(cmds)

    def lease_killed(self, conn: Connection, msg: m.LeaseKilled) -> None:
        agent = lc.LOCAL if conn is self.rt.agent else conn.name
        with self.leases_lock:
            cmds = self.leases.lease_killed(agent, msg.lease_id, msg.reason)
        self.execute(cmds)

    def lease_reclaimed(self, conn: Connection, msg: m.ReclaimLease) -> None:
        agent = lc.LOCAL if conn is self.rt.agent else conn.name
        with self.leases_lock:
            cmds = self.leases.lease_reclaimed(agent, msg.lease_id)
        self.execute(cmds)

    def node_died(self, node_id: bytes) -> None:
        with self.leases_lock:
            self.leases.node_died(node_id)

    def _warn_if_infeasible(self, resources: dict[str, float], name: str) -> None:
        """Warns once per resource shape that no node in the cluster can run it."""

        def fits(have: dict[str, float]) -> bool:
            return all(have.get(k, 0.0) + 1e-9 >= v for k, v in resources.items())

        if any("_group_" in k for k in resources):
            return  # a placement group's bundle: it exists once the group is ready
        if fits(self.rt.cluster_resources):
            return  # this node alone can: nothing to check

        def on_info(reply: Any) -> None:
            if isinstance(reply, BaseException):
                return
            if not any(fits(n.resources) for n in reply.nodes if n.alive):
                print(
                    f"manta: warning: task {name} needs {resources}, which no node in the "
                    f"cluster has; it stays pending until a node with these resources joins "
                    f"(`manta status` lists pending demands).",
                    file=sys.stderr,
                )

        self.rt.ask_head(m.GetClusterInfo(), on_info)

    # -- cancel -----------------------------------------------------------

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        if force and self.rt.run(self._is_actor_call(ref._id)):
            raise ValueError(FORCE_CANCEL_OF_ACTOR_CALL)
        self.rt.post(self.cancel_io, ref._id, force, recursive)

    async def _is_actor_call(self, oid: bytes) -> bool:
        task = self.by_return.get(oid)  # read on the I/O thread, after any submission posted before
        return task is not None and task.spec.actor_id is not None

    def cancel_io(self, oid: bytes, force: bool, recursive: bool) -> None:
        task = self.by_return.get(oid)
        if task is not None:
            self._cancel(task, force, recursive)

    def _cancel(self, task: Task, force: bool, recursive: bool) -> None:
        if task.done:
            return
        task.cancelled = True
        if task.spec.actor_id is not None:
            self.rt.actors.cancel(task, recursive)
            return
        with self.leases_lock:
            cmds = self.leases.cancel(task, force, recursive)
        self.execute(cmds)

    def cancel_children(self, parent: bytes, force: bool) -> None:
        """I/O thread: cancels what the task `parent` submitted (Ray's recursive cancel)."""
        with self.lock:
            children = list(self.children.get(parent, ()))
        for task in children:
            self._cancel(task, force, True)

    # -- results ----------------------------------------------------------

    def complete(self, task: Task, reply: m.TaskDone) -> None:
        """The task's worker answered: its results, or its own error, are ready."""
        rt = self.rt
        if task.done:
            return
        task.done = True
        if reply.error is not None:
            for rid in task.return_ids:
                rt.objects.set_ready(rid, reply.error, is_error=True)
        elif task.spec.num_returns == m.DYNAMIC:
            self._complete_dynamic(task, reply)
        else:
            for ret in reply.returns:
                self.store_return(ret)
            if task.spec.actor_id is None and any(r.in_store and r.node_id != rt.node_id for r in reply.returns):
                rt.recovery.keep(task, reply)
        self._finish(task)

    def store_return(self, ret: m.ReturnObject) -> None:
        """A result's value or location, and the refs it holds, recorded."""
        rt = self.rt
        with self.lock:
            for cid, cowner in ret.contained:
                self.refs.pin(cid, cowner)
                e = self.refs.get(cid)
                if e is not None and not e.owned:
                    e.registered = True
            waiters, cmds = self.refs.set_ready(
                ret.object_id, ret.data, in_store=ret.in_store, node_id=ret.node_id,
            )
            e = self.refs.get(ret.object_id)
            if e is not None:
                e.contained = list(ret.contained)
            else:
                for cid, _ in ret.contained:
                    cmds += self.refs.unpin(cid)
        for w in waiters:
            w()
        rt.references.run_commands(cmds)

    def _complete_dynamic(self, task: Task, reply: m.TaskDone) -> None:
        """A dynamic generator's items came with its answer; its ref's value
        is a DynamicObjectRefGenerator of them, which keeps them alive."""
        rt = self.rt
        refs = []
        for ret in reply.returns:
            with self.lock:
                if self.refs.get(ret.object_id) is not None or ids.task_of(ret.object_id) != task.task_id:
                    continue
                self.refs.add_owned(ret.object_id)
            refs.append(ObjectRef(ret.object_id, rt.address, rt))
            self.store_return(ret)
        value = serialize(DynamicObjectRefGenerator(refs)).to_bytes()
        self.store_return(m.ReturnObject(
            object_id=task.return_ids[0], data=value, contained=[(r._id, rt.address) for r in refs],
        ))
        del refs  # the items live on, held by the value

    def fail(self, task: Task, error: bytes) -> None:
        if task.done:
            return
        task.done = True
        for rid in task.return_ids:
            self.rt.objects.set_ready(rid, error, is_error=True)
        self._finish(task)

    def _finish(self, task: Task) -> None:
        if task.counted:
            task.counted = False
            with self.lock:
                self.unfinished -= 1
        by_return = self.by_return
        for rid in task.return_ids:
            by_return.pop(rid, None)
        if task.parent:
            with self.lock:
                siblings = self.children.get(task.parent)
                if siblings is not None:
                    siblings.discard(task)
                    if not siblings:
                        del self.children[task.parent]
        recovery = self.rt.recovery
        if task.task_id in recovery.lineage and recovery.holds_pins(task):
            return
        if task.pinned and not task.args_released:
            self.rt.references.run_commands(self.unpin_args(task))
        task.args_released = True

    def unpin_args(self, task: Task) -> list[Any]:
        if task.args_released:
            return []
        task.args_released = True
        return self.rt.references.unpin(task.pinned)
