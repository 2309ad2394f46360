"""The core runtime inside every driver and worker.

It owns the objects this process creates (reference counts, values,
locations), submits tasks to leased workers and actor calls straight to
actor workers, answers borrowers, and reads and writes the node store.

Threads: the user's thread(s) call the public API; one I/O thread runs an
asyncio loop with every connection. Shared state (the reference table) is
guarded by one lock; everything about leases, peers and in-flight tasks is
touched only on the I/O thread, reached with `_post`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from msgspec.structs import replace

from manta import exceptions as exc
from manta._private.config import Config
from manta._private.objectstore.region import Region
from manta._private.protocol import messages as m
from manta._private.runtime.context import current_task
from manta._private.runtime.errors import error_from_remote
from manta._private.runtime.lineage import LineageTable
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.refs import EndBorrow, FreeStored, ReferenceTable
from manta._private.runtime.serialization import (
    SerializedValue,
    describe_unpicklable,
    deserialize,
    serialize,
    serialize_error,
)
from manta._private.transport.connection import (
    Connection,
    ConnectionLost,
    PeerNodeDied,
    RemoteError,
    connect,
    new_event_loop,
    serve,
)
from manta._private.transport.link import HeadLink

log = logging.getLogger(__name__)

# Values up to this size travel inside messages; larger ones go to the store.
INLINE_MAX = 100 * 1024
# A lease idle this long goes back to the agent.
LEASE_IDLE_S = 0.02
MAX_LEASE_REQUESTS = 16
# How long a worker waits in get() before it lends its CPU to other tasks.
BLOCK_GRACE_S = 0.05
# How many times a reader follows a lost object to its rebuilt copy.
MAX_RELOCATIONS = 8

SessionInfo = m.SessionInfo


@dataclass(eq=False)
class _Task:
    spec: m.TaskSpec
    return_ids: list[bytes]
    pinned: list[bytes]
    retries_left: int = 0
    retry_exceptions: bool | tuple[type, ...] = False
    max_task_retries: int = 0
    unresolved: int = 0
    resolved: bool = False
    cancelled: bool = False
    force_cancel: bool = False
    done: bool = False
    lease: _Lease | None = None
    key: Any = None
    # Its argument pins are gone: set once, by the task's end or (if its
    # stored outputs are kept rebuildable) by the end of its lineage.
    args_released: bool = False


@dataclass(eq=False)
class _Lease:
    lease_id: int
    worker_id: bytes
    address: str
    conn: Connection | None = None
    task: _Task | None = None
    idle_since: float = 0.0
    gpu_ids: list[int] = field(default_factory=list)
    agent: Connection | None = None  # the agent that granted it (maybe another node's)


@dataclass(eq=False)
class _KeyState:
    resources: dict[str, float]
    env_vars: dict[str, str]
    placement: m.Placement
    retriable: bool = True
    queue: collections.deque[_Task] = field(default_factory=collections.deque)
    idle: list[_Lease] = field(default_factory=list)
    busy: set[_Lease] = field(default_factory=set)
    requests: int = 0


@dataclass(eq=False)
class _ActorClient:
    actor_id: bytes
    address: str = ""
    epoch: int = 0
    conn: Connection | None = None
    queue: collections.deque[_Task] = field(default_factory=collections.deque)
    inflight: dict[bytes, _Task] = field(default_factory=dict)
    dead: str | None = None
    waiting: bool = False
    connecting: bool = False
    # Calls may skip the I/O thread (see submit_actor_task) only while the
    # I/O thread has nothing queued for this actor and holds no posted call.
    lock: threading.Lock = field(default_factory=threading.Lock)
    direct_ok: bool = False
    posted: int = 0
    release_when_idle: bool = False


class _Waiter:
    """Counts objects becoming ready; wakes one blocked thread at `needed`."""

    __slots__ = ("count", "needed", "event", "__weakref__")

    def __init__(self, needed: int) -> None:
        self.count = 0
        self.needed = needed
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        if self.count >= self.needed:
            self.event.set()


def _pinned_view(rt: CoreRuntime, object_id: bytes, offset: int, size: int) -> memoryview:
    """A read-only view of stored bytes that unpins the object when it dies.

    numpy keeps the *exporter* of a buffer alive, not the memoryview it was
    handed, so the exporter must be a per-read object: a ctypes array over
    the mapped region. When the last array viewing it is gone, the object
    is unpinned in the store and its bytes may be reused.
    """
    assert rt.region is not None
    exporter = (ctypes.c_char * size).from_buffer(rt.region.mmap, offset)
    weakref.finalize(exporter, rt._post, rt._store_unpin, object_id)
    return memoryview(exporter).cast("B").toreadonly()


class CoreRuntime:
    def __init__(
        self,
        session: SessionInfo,
        config: Config,
        *,
        is_driver: bool,
        worker_id: bytes,
        job_id: int = 0,
        namespace: str = "",
    ) -> None:
        self.session = session
        self.config = config
        self.is_driver = is_driver
        self.worker_id = worker_id
        self.job_id = job_id
        self.namespace = namespace
        self.node_id = session.node_id
        self.driver_address = ""
        self.env_vars: dict[str, str] = {}
        if session.node_ip:
            self.address = f"tcp:{session.node_ip}:0"  # the port is known once bound
        else:
            self.address = f"unix:{session.session_dir}/sockets/{worker_id.hex()[:16]}.sock"
        self.lock = threading.RLock()
        self.refs = ReferenceTable(self.address)
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self.loop = new_event_loop()
        self._thread: threading.Thread | None = None
        self.head: HeadLink | None = None
        self.agent: Connection | None = None
        self._server: asyncio.AbstractServer | None = None
        self.region: Region | None = None
        self.store_capacity = 0
        self._peers: dict[str, Connection] = {}
        self._peer_waiters: dict[str, list[Callable[[Connection | BaseException], None]]] = {}
        self._keys: dict[Any, _KeyState] = {}
        self._tasks_by_return: dict[bytes, _Task] = {}
        self._actors: dict[bytes, _ActorClient] = {}
        self._exported: set[bytes] = set()
        self._functions: dict[bytes, Any] = {}
        self._sweep_scheduled = False
        self._unregistered: set[bytes] = set()
        self.actor_handle_counts: dict[bytes, int] = {}
        self.shared_actors: set[bytes] = set()
        self.executor: Any = None  # the worker's task executor
        self.on_log: Callable[[m.LogLines], None] | None = None
        self.closing = False
        self.cluster_resources: dict[str, float] = {}
        self._log_conns: dict[str, Connection] = {}
        self._node_addresses: dict[bytes, str] = {}
        # Which node each worker address we talk to is on (leases, actors).
        self._peer_nodes: dict[str, bytes] = {}
        self._dead_nodes: set[bytes] = set()
        # Set when the head or agent connection drops: blocking calls raise it.
        self.control_lost = ""
        self._waiters: weakref.WeakSet[_Waiter] = weakref.WeakSet()
        # Why an agent killed a lease's worker, by (agent connection, lease id).
        self._lease_kills: dict[tuple[int, int], str] = {}
        # Finished tasks whose stored outputs may need rebuilding (I/O thread).
        self._lineage = LineageTable(config.max_lineage_bytes)

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(started,), name="manta-io", daemon=True
        )
        self._thread.start()
        started.wait()
        self.run(self._connect_all())

    def _run_loop(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    async def _connect_all(self) -> None:
        os.makedirs(f"{self.session.session_dir}/sockets", exist_ok=True)
        self._server, self.address = await serve(
            self.address, self.session.token, self._handle, on_close=self._on_peer_closed
        )
        self.refs.me = self.address
        self.head = HeadLink(
            self.session.head_address, self.session.token, self._handle, on_gone=self._control_gone,
            reregister=self._reregister_driver if self.is_driver else None,
            grace=self.config.head_reconnect_s,
        )
        await self.head.connect()
        self.agent = await connect(
            self.session.agent_address,
            self.session.token,
            self._handle,
            name="agent",
            on_close=self._on_control_lost,
        )
        if self.is_driver:
            reply = await self.head.request(
                m.RegisterDriver(
                    namespace=self.namespace, pid=os.getpid(), env_vars=self.env_vars
                )
            )
            self.job_id = reply.job_id
            self.namespace = reply.namespace
            self.driver_address = self.address
            self.head.persistent = reply.persistent
        reply = await self.agent.request(
            m.RegisterClient(
                kind=m.ClientKind.DRIVER if self.is_driver else m.ClientKind.WORKER,
                worker_id=self.worker_id,
                job_id=self.job_id,
                pid=os.getpid(),
                address=self.address,
            )
        )
        self.node_id = reply.node_id
        self.store_capacity = reply.store_capacity
        if not self.is_driver:
            self.head.persistent = reply.head_persistent
        self.region = Region.attach(reply.store_pid, reply.store_fd, reply.store_capacity)
        info = await self.agent.request(m.GetResources())
        self.cluster_resources = dict(info.total)

    async def _reregister_driver(self, conn: Connection) -> None:
        """Tells a restarted head that this driver's job goes on."""
        await conn.request(
            m.RegisterDriver(
                namespace=self.namespace, pid=os.getpid(), env_vars=self.env_vars, job_id=self.job_id
            )
        )

    def _on_control_lost(self, conn: Connection) -> None:
        self._control_gone(f"lost the connection to the cluster's {conn.name}: the cluster stopped or crashed")

    def _control_gone(self, why: str) -> None:
        if self.closing:
            return
        if not self.is_driver:
            # A worker without its agent or head has nothing left to do.
            os._exit(1)
        self.control_lost = f"{why}; call manta.shutdown() and init() again"
        log.error("%s", self.control_lost)
        # Nothing blocked in get()/wait() may hang: wake them all to raise.
        for waiter in list(self._waiters):
            waiter.event.set()

    def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True

        async def close() -> None:
            for c in list(self._peers.values()) + list(self._log_conns.values()):
                c.close()
            if self.head is not None:
                self.head.close()
            if self.agent is not None:
                self.agent.close()
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0)

        try:
            self.run(close(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        # Refs that outlive shutdown must not touch this runtime.
        self.refs.entries.clear()
        if self.region is not None:
            self.region.close()
        if self.address.startswith("unix:"):
            try:
                os.unlink(self.address.partition(":")[2])
            except OSError:
                pass

    # -- thread bridging --------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.closing and self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # loop closed during shutdown

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking call on the manta I/O thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def _run_commands(self, commands: list[Any]) -> None:
        if not commands:
            return
        frees: dict[bytes, list[bytes]] = {}
        ends: dict[str, list[bytes]] = {}
        for c in commands:
            if isinstance(c, EndBorrow):
                ends.setdefault(c.owner, []).append(c.object_id)
            elif isinstance(c, FreeStored):
                frees.setdefault(c.node_id or self.node_id, []).append(c.object_id)
                done = self._lineage.released(c.object_id)
                if done is not None:
                    # Handled by this same loop, further on.
                    commands.extend(self._unpin_args(done))
        for node_id, ids in frees.items():
            if node_id in self._dead_nodes:
                continue  # its store is gone with it
            if node_id == self.node_id:
                if self.agent is not None:
                    self.agent.send(m.StoreFree(object_ids=ids))
                continue
            self._with_node(node_id, partial(_send_to, m.StoreFree(object_ids=ids)))
        for owner, ids in ends.items():
            self._with_peer(owner, partial(_send_to, m.RemoveBorrow(object_ids=ids, borrower=self.address)))

    # -- ids --------------------------------------------------------------

    def new_task_id(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(8, "little")

    # -- reference counting hooks -----------------------------------------

    def ref_deleted(self, object_id: bytes) -> None:
        if self.closing:
            return
        with self.lock:
            # Fast path (one per dropped ref, often thousands at once): the
            # entry stays alive, nothing to release.
            e = self.refs.entries.get(object_id)
            if e is None:
                return
            if e.local > 1 or e.pins or e.borrowers:
                e.local -= 1
                return
            commands = self.refs.remove_local(object_id)
            if commands:
                self._unregistered.discard(object_id)
        if commands:
            self._post(self._run_commands, commands)

    def deserialized_ref(self, object_id: bytes, owner: str) -> ObjectRef:
        with self.lock:
            e = self.refs.entries.get(object_id)
            if e is not None:
                e.local += 1
            else:
                _, created = self.refs.add_local(object_id, owner)
                if created:
                    self._unregistered.add(object_id)
        return ObjectRef(object_id, owner, self)

    def take_unregistered(self) -> dict[str, list[bytes]]:
        """Borrowed refs whose owners do not yet know about us, by owner."""
        out: dict[str, list[bytes]] = {}
        with self.lock:
            for oid in self._unregistered:
                e = self.refs.get(oid)
                if e is not None and not e.owned and not e.registered and e.alive():
                    out.setdefault(e.owner, []).append(oid)
                    e.registered = True
            self._unregistered.clear()
        return out

    def register_borrows(self, borrower: str | None = None) -> None:
        """Tells owners about refs this process keeps, before they could be freed."""
        pending = self.take_unregistered()
        if not pending:
            return

        async def go() -> None:
            futs = []
            for owner, ids in pending.items():
                conn = await self._peer(owner)
                futs.append(
                    conn.request(
                        m.AddBorrow(object_ids=ids, borrower=borrower or self.address)
                    )
                )
            await asyncio.gather(*futs, return_exceptions=True)

        self.run(go())

    # -- peers ------------------------------------------------------------

    def _with_peer(self, address: str, cb: Callable[[Any], None]) -> None:
        """Calls cb(connection) or cb(exception); connects on first use (I/O thread)."""
        conn = self._peers.get(address)
        if conn is not None and not conn.closed:
            cb(conn)
            return
        waiters = self._peer_waiters.get(address)
        if waiters is not None:
            waiters.append(cb)
            return
        self._peer_waiters[address] = [cb]

        async def dial() -> None:
            result: Connection | BaseException
            try:
                result = await connect(
                    address, self.session.token, self._handle, on_close=self._on_peer_closed,
                    timeout=10,
                )
                self._peers[address] = result
            except Exception as e:  # noqa: BLE001 - any failure means the peer is gone
                result = ConnectionLost(f"cannot reach {address}: {e}")
            for w in self._peer_waiters.pop(address, []):
                try:
                    w(result)
                except Exception:
                    log.exception("peer callback failed")

        self.loop.create_task(dial())

    async def _peer(self, address: str) -> Connection:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._with_peer(address, fut.set_result)
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    def _on_peer_closed(self, conn: Connection) -> None:
        for addr, c in list(self._peers.items()):
            if c is conn:
                del self._peers[addr]
                if not self.closing:
                    # The process there is gone (or its node is): whatever it
                    # borrowed from us it holds no longer.
                    with self.lock:
                        cmds = self.refs.remove_borrower_everywhere(addr)
                    self._run_commands(cmds)

    def watch_borrower(self, address: str) -> None:
        """I/O thread: keeps a connection to a borrower, whose closing tells us it died."""
        if address != self.address:
            self._with_peer(address, _ignore)

    # -- functions --------------------------------------------------------

    def export_function(self, fn_id: bytes, blob: bytes) -> None:
        if fn_id in self._exported:
            return
        self.run(self._await_request(self.head, m.PutFunction(fn_id=fn_id, blob=blob)))
        self._exported.add(fn_id)

    async def _await_request(self, conn: Connection | HeadLink | None, msg: Any) -> Any:
        if conn is None:
            raise ConnectionLost("not connected")
        try:
            return await conn.request(msg)
        except RemoteError as e:
            raise error_from_remote(e) from None

    def call_head(self, msg: Any) -> Any:
        """Any thread but I/O: asks the head, raising the public error it answers with."""
        return self.run(self._await_request(self.head, msg))

    def call_agent(self, msg: Any) -> Any:
        """Any thread but I/O: asks this node's agent, raising the public error it answers with."""
        return self.run(self._await_request(self.agent, msg))

    def load_function(self, fn_id: bytes) -> Any:
        fn = self._functions.get(fn_id)
        if fn is None:
            import pickle

            reply = self.run(self._await_request(self.head, m.GetFunction(fn_id=fn_id)))
            fn = pickle.loads(reply.blob)
            self._functions[fn_id] = fn
        return fn

    # -- put --------------------------------------------------------------

    def serialize_value(self, value: Any, what: str) -> SerializedValue:
        try:
            return serialize(value)
        except Exception as e:
            raise exc.RaySerializationError(
                f"Could not serialize {what}: {describe_unpicklable(value, e)}"
            ) from e

    def put(self, value: Any, _owner_pins: int = 0) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling put() on an ObjectRef is not allowed; pass the ref itself or "
                "put the value it refers to."
            )
        sv = self.serialize_value(value, f"the object passed to put() ({type(value).__name__})")
        oid = self.new_task_id() + b"\x00\x00\x00\x00"
        return self._store_owned(oid, sv, local=1)

    def _store_owned(self, oid: bytes, sv: SerializedValue, local: int) -> ObjectRef:
        contained = [(r._id, r._owner) for r in sv.contained]
        if sv.size <= INLINE_MAX:
            data = sv.to_bytes()
            with self.lock:
                self.refs.add_owned(oid, local=local)
                self.refs.set_ready(oid, data, contained=contained)
        else:
            self.write_store(oid, sv)
            with self.lock:
                self.refs.add_owned(oid, local=local)
                self.refs.set_ready(oid, None, in_store=True, node_id=self.node_id, contained=contained)
        return ObjectRef(oid, self.address, self) if local else None  # type: ignore[return-value]

    def write_store(self, oid: bytes, sv: SerializedValue) -> None:
        assert self.region is not None
        try:
            reply = self.run(
                self._await_request(self.agent, m.StoreCreate(object_id=oid, size=sv.size))
            )
        except exc.ObjectStoreFullError:
            raise
        sv.write_into(self.region.view[reply.offset : reply.offset + sv.size])
        self._post(self._send_agent, m.StoreSeal(object_id=oid))

    def _send_agent(self, msg: Any) -> None:
        if self.agent is not None:
            self.agent.send(msg)

    def _store_unpin(self, object_id: bytes) -> None:
        if self.agent is not None:
            self.agent.send(m.StoreUnpin(object_ids=[object_id]))

    # -- get / wait -------------------------------------------------------

    @staticmethod
    def _check_refs(refs: Any, what: str) -> list[bytes]:
        """Ids of `refs`, raising TypeError unless every element is an ObjectRef."""
        # One pass that both filters and collects: the cheapest check in Python.
        ids = [r._id for r in refs if type(r) is ObjectRef]
        if len(ids) != len(refs):
            bad = next(r for r in refs if type(r) is not ObjectRef)
            raise TypeError(
                f"{what} expected an ObjectRef or a list of ObjectRefs, got a list "
                f"containing {type(bad).__name__}"
            )
        return ids

    def _ensure_fetch(self, ref: ObjectRef, lost_node: bytes = b"") -> None:
        """I/O thread: ask the owner of a borrowed ref for its value."""
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None or e.owned or e.state or e.fetching:
                return
            e.fetching = True
        oid, owner = ref._id, ref._owner

        def on_conn(conn: Any) -> None:
            if isinstance(conn, BaseException):
                self._fetched(oid, None, exc.OwnerDiedError(oid.hex(), owner))
                return
            conn.request_cb(
                m.GetObject(object_id=oid, lost_node=lost_node),
                lambda r: self._fetched(oid, r, None),
            )

        self._with_peer(owner, on_conn)

    def _fetched(self, oid: bytes, reply: Any, error: BaseException | None) -> None:
        if isinstance(reply, RemoteError):
            error = error_from_remote(reply)
            if isinstance(error, exc.ObjectLostError):
                error = type(error)(oid.hex())
        elif isinstance(reply, ConnectionLost):
            with self.lock:
                e = self.refs.get(oid)
                owner = e.owner if e is not None else ""
            error = exc.OwnerDiedError(oid.hex(), owner)
        if error is not None:
            self._set_ready(oid, serialize_error(error).to_bytes(), is_error=True)
        else:
            self._set_ready(
                oid, reply.data, in_store=reply.in_store, node_id=reply.node_id,
                is_error=reply.is_error,
            )

    def _set_ready(self, oid: bytes, data: bytes | None, **kw: Any) -> tuple[Any, Any]:
        with self.lock:
            waiters, cmds = self.refs.set_ready(oid, data, **kw)
        for w in waiters:
            try:
                w()
            except Exception:
                log.exception("waiter failed")
        if cmds:
            self._run_commands(cmds)
        return waiters, cmds

    def _wait_ready(self, refs: list[ObjectRef], needed: int, timeout: float | None) -> list[bool]:
        """Blocks until `needed` of `refs` are ready; returns readiness flags."""
        if self.control_lost:
            raise exc.RaySystemError(self.control_lost)
        waiter = _Waiter(0)
        self._waiters.add(waiter)
        fetch: list[ObjectRef] = []
        ready = 0
        with self.lock:
            seen: set[bytes] = set()
            for r in refs:
                e = self.refs.get(r._id)
                if e is None:
                    ready += 1  # freed/unknown: reported as an error when read
                    continue
                if e.state:
                    ready += 1
                elif r._id not in seen:
                    seen.add(r._id)
                    e.waiters = e.waiters or []
                    e.waiters.append(waiter)
                    if not e.owned and not e.fetching:
                        fetch.append(r)
            waiter.count = ready
            waiter.needed = needed
            if ready >= needed:
                waiter.event.set()
        for r in fetch:
            self._post(self._ensure_fetch, r)
        # A short wait keeps the CPU (as Ray's timing effectively does); a
        # longer one lends it back so nested tasks cannot deadlock the node.
        grace = BLOCK_GRACE_S if timeout is None else min(timeout, BLOCK_GRACE_S)
        if not waiter.event.wait(grace):
            remaining = None if timeout is None else max(0.0, timeout - grace)
            blocked = self._notify_blocked()
            try:
                waiter.event.wait(remaining)
            finally:
                if blocked:
                    self._post(self._send_agent, m.WorkerUnblocked(worker_id=self.worker_id))
        self._waiters.discard(waiter)
        if self.control_lost:
            raise exc.RaySystemError(self.control_lost)
        with self.lock:
            return [self._is_ready(r._id) for r in refs]

    def _all_ready(self, refs: list[ObjectRef]) -> bool:
        pending = self.refs.pending
        if len(refs) == 1:
            return refs[0]._id not in pending
        return not pending or pending.isdisjoint([r._id for r in refs])

    def _is_ready(self, oid: bytes) -> bool:
        e = self.refs.get(oid)
        return e is None or bool(e.state)

    def _notify_blocked(self) -> bool:
        """A worker running a plain task gives its CPU back while it waits."""
        if self.is_driver or self.executor is None:
            return False
        ctx = current_task.get()
        if ctx is None or ctx.actor_id is not None:
            return False
        self._post(self._send_agent, m.WorkerBlocked(worker_id=self.worker_id))
        return True

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        single = isinstance(refs, ObjectRef)
        if single:
            lst = [refs]
        elif isinstance(refs, (list, tuple)):
            self._check_refs(refs, "get()")
            lst = refs if isinstance(refs, list) else list(refs)
        else:
            raise exc.ObjectRefTypeError(
                f"get() expected an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}"
            )
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative")
        if not self._all_ready(lst):
            flags = self._wait_ready(lst, len(lst), timeout)
            if not all(flags):
                raise exc.GetTimeoutError(
                    f"Get timed out: {flags.count(False)} of {len(lst)} objects not ready "
                    f"after {timeout} s."
                )
        values = self._materialize_all(lst)
        if self._unregistered and current_task.get() is None:
            self.register_borrows()
        return values[0] if single else values

    def _materialize_all(self, refs: list[ObjectRef]) -> list[Any]:
        # One lock round for the whole list; values are decoded outside it.
        entries = self.refs.entries
        with self.lock:
            snap = []
            for r in refs:
                e = entries.get(r._id)
                snap.append(None if e is None else (e.data, e.in_store, e.is_error))
        out = []
        loads = deserialize
        for r, item in zip(refs, snap):
            if item is None or item[1] or item[2]:
                out.append(self._materialize(r))  # stored, failed or freed: the slow path
            else:
                out.append(loads(item[0])[0])  # type: ignore[arg-type]  # inline: data is set
        return out

    def _materialize(self, ref: ObjectRef) -> Any:
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            data, in_store, is_error, node_id = e.data, e.in_store, e.is_error, e.node_id
        for _ in range(MAX_RELOCATIONS):
            if not in_store:
                break
            try:
                value, is_error = self._read_store(ref._id, node_id)
                break
            except exc.ObjectLostError:
                # The node holding it died: the owner rebuilds it (or says
                # why it cannot), and we read wherever it is now.
                self._relocate(ref, node_id)
                with self.lock:
                    e = self.refs.get(ref._id)
                    if e is None:
                        raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner) from None
                    data, in_store, is_error, node_id = e.data, e.in_store, e.is_error, e.node_id
        else:
            raise exc.ObjectReconstructionFailedError(
                ref.hex(), ref._owner, f"its copy was lost {MAX_RELOCATIONS} times while being read"
            )
        if not in_store:
            assert data is not None
            value, is_error = deserialize(data)
        if is_error:
            if isinstance(value, exc.RayTaskError):
                raise value.as_instanceof_cause()
            raise value
        return value

    def _read_store(self, oid: bytes, node_id: bytes = b"") -> tuple[Any, bool]:
        assert self.region is not None
        if node_id in self._dead_nodes:
            raise exc.ObjectLostError(oid.hex(), "", f"node {node_id.hex()} died")
        if node_id and node_id != self.node_id:
            # Stored on another node: our agent copies it here first.
            msg: Any = m.StorePull(object_id=oid, source=self.agent_address_of(node_id))
        else:
            msg = m.StorePin(object_id=oid)
        try:
            reply = self.run(self._await_request(self.agent, msg))
        except exc.ObjectLostError as e:
            raise exc.ObjectLostError(oid.hex(), "", str(e)) from None
        return deserialize(_pinned_view(self, oid, reply.offset, reply.size))

    def _with_node(self, node_id: bytes, cb: Callable[[Connection], None]) -> None:
        """I/O thread: calls cb with a connection to the agent of `node_id`."""
        address = self._node_addresses.get(node_id)
        if address is not None:
            self._with_peer(address, lambda c: cb(c) if isinstance(c, Connection) else None)
            return
        assert self.head is not None

        def on_info(reply: Any) -> None:
            if isinstance(reply, BaseException):
                return
            self._node_addresses.update({n.node_id: n.address for n in reply.nodes})
            if node_id in self._node_addresses:
                self._with_node(node_id, cb)

        self.head.request_cb(m.GetClusterInfo(), on_info)

    def placement_group_ready(self, pg: Any) -> ObjectRef:
        """An owned ref set once the head reports the group created (or removed)."""
        oid = self.new_task_id() + b"\x00\x00\x00\x01"
        with self.lock:
            self.refs.add_owned(oid)

        def on_state(reply: Any) -> None:
            if isinstance(reply, BaseException):
                err: BaseException = error_from_remote(reply) if isinstance(reply, RemoteError) else reply
            elif reply.state == "CREATED":
                self._set_ready(oid, serialize(pg).to_bytes())
                return
            else:
                err = exc.RaySystemError(f"placement group {pg.id.hex()} was removed: {reply.error}")
            self._set_ready(oid, serialize_error(err).to_bytes(), is_error=True)

        def ask() -> None:
            assert self.head is not None
            self.head.request_cb(m.WaitPlacementGroup(pg_id=pg.id.binary()), on_state)

        self._post(ask)
        return ObjectRef(oid, self.address, self)

    def agent_address_of(self, node_id: bytes) -> str:
        address = self._node_addresses.get(node_id)
        if address is None:
            reply = self.run(self._await_request(self.head, m.GetClusterInfo()))
            self._node_addresses.update({n.node_id: n.address for n in reply.nodes})
            address = self._node_addresses.get(node_id)
            if address is None:
                raise exc.ObjectLostError("", "", f"node {node_id.hex()} is not in the cluster")
        return address

    def wait(
        self,
        refs: list[ObjectRef],
        num_returns: int = 1,
        timeout: float | None = None,
        fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
            raise TypeError(
                f"wait() expected a list of ObjectRefs, got {type(refs).__name__}"
            )
        lst = refs if isinstance(refs, list) else list(refs)
        if not lst:
            return [], []
        # One pass checks types, collects ids and detects duplicates.
        unique = {r._id for r in lst if type(r) is ObjectRef}
        if len(unique) != len(lst):
            self._check_refs(lst, "wait()")  # raises for a non-ObjectRef
            raise ValueError("wait() requires a list of unique ObjectRefs")
        if num_returns <= 0:
            raise ValueError(f"num_returns must be positive, got {num_returns}")
        if num_returns > len(lst):
            raise ValueError(
                f"num_returns ({num_returns}) cannot exceed the number of refs ({len(lst)})"
            )
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative")
        if self.refs.pending.isdisjoint(unique):
            # Everything is ready already (the common case in a tight loop).
            return lst[:num_returns], lst[num_returns:]
        flags = self._wait_ready(lst, num_returns, timeout)
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for r, ok in zip(lst, flags):
            if ok and len(ready) < num_returns:
                ready.append(r)
            else:
                not_ready.append(r)
        return ready, not_ready

    def future_for(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def complete() -> None:
            if fut.done():
                return
            try:
                fut.set_result(self._materialize(ref))
            except BaseException as e:  # noqa: BLE001 - delivered to the future
                fut.set_exception(e)

        def on_ready() -> None:
            # Reading from the store needs the I/O thread: never block it.
            threading.Thread(target=complete, daemon=True).start() if self._needs_io(ref) else complete()

        with self.lock:
            pending = self.refs.add_waiter(ref._id, on_ready)
            e = self.refs.get(ref._id)
            need_fetch = pending and e is not None and not e.owned
        if need_fetch:
            self._post(self._ensure_fetch, ref)
        if not pending:
            on_ready()
        return fut

    def _needs_io(self, ref: ObjectRef) -> bool:
        e = self.refs.get(ref._id)
        return e is not None and e.in_store

    async def await_ref(self, ref: ObjectRef) -> Any:
        return await asyncio.wrap_future(self.future_for(ref))

    # -- task submission --------------------------------------------------

    def prepare_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[m.Arg], list[str], list[bytes]]:
        out: list[m.Arg] = []
        pinned: list[bytes] = []
        values = list(args) + list(kwargs.values())
        for i, value in enumerate(values):
            if isinstance(value, ObjectRef):
                with self.lock:
                    self.refs.pin(value._id, value._owner)
                pinned.append(value._id)
                out.append(m.Arg(object_id=value._id, owner=value._owner))
                continue
            label = f"argument {i}" if i < len(args) else f"keyword argument {list(kwargs)[i - len(args)]!r}"
            sv = self.serialize_value(value, f"{label} of {name}() ({type(value).__name__})")
            with self.lock:
                for r in sv.contained:
                    self.refs.pin(r._id, r._owner)
                    pinned.append(r._id)
            if sv.size > INLINE_MAX:
                oid = self.new_task_id() + b"\x00\x00\x00\x00"
                self._store_owned(oid, sv, local=0)
                with self.lock:
                    self.refs.pin(oid, self.address)
                pinned.append(oid)
                out.append(m.Arg(object_id=oid, owner=self.address, in_store=True, node_id=self.node_id))
            else:
                out.append(m.Arg(data=sv.to_bytes()))
        return out, list(kwargs), pinned

    def _new_task(
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
        placement: m.Placement | None = None,
        capture: tuple[bytes, int] = (b"", 0),
    ) -> tuple[_Task, list[ObjectRef]]:
        """Serializes arguments and registers the return objects this process now owns."""
        spec_args, kwnames, pinned = self.prepare_args(args, kwargs, name)
        task_id = self.new_task_id()
        # An actor call with num_returns=0 still gets one id, for cancel and errors.
        n = num_returns if actor_id is None else max(num_returns, 1)
        return_ids = [task_id + i.to_bytes(4, "little") for i in range(1, n + 1)]
        with self.lock:
            for rid in return_ids:
                self.refs.add_owned(rid)
        spec = m.TaskSpec(
            task_id=task_id,
            job_id=self.job_id,
            name=name,
            fn_id=fn_id,
            args=spec_args,
            kwarg_names=kwnames,
            num_returns=num_returns,
            owner=self.address,
            resources=resources or {},
            actor_id=actor_id,
            method=method,
            env_vars=env_vars or {},
            namespace=self.namespace,
            driver=self.driver_address,
            placement=placement or m.Placement(),
            capture_pg=capture[0],
            capture_pg_bundles=capture[1],
        )
        task = _Task(spec, return_ids, pinned, retries_left=retries)
        return task, [ObjectRef(rid, self.address, self) for rid in return_ids]

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
    ) -> list[ObjectRef]:
        task, refs = self._new_task(
            name, args, kwargs, num_returns,
            fn_id=fn_id, resources=resources, env_vars=env_vars, retries=max_retries,
            placement=placement or m.Placement(), capture=capture,
        )
        task.retry_exceptions = retry_exceptions
        self._post(self._submit_io, task)
        return refs

    def _submit_io(self, task: _Task) -> None:
        for rid in task.return_ids:
            self._tasks_by_return[rid] = task
        self._resolve(task, self._enqueue)

    def _resolve(self, task: _Task, then: Callable[[_Task], None]) -> None:
        """I/O thread: waits for ref arguments, inlining small ready values."""
        pending = []
        for i, arg in enumerate(task.spec.args):
            if arg.object_id is None or arg.in_store and arg.owner == self.address:
                continue
            pending.append(i)
        task.unresolved = len(pending)
        if not pending:
            task.resolved = True
            then(task)
            return
        for i in pending:
            self._resolve_arg(task, i, then)

    def _resolve_arg(self, task: _Task, i: int, then: Callable[[_Task], None]) -> None:
        arg = task.spec.args[i]
        oid = arg.object_id
        assert oid is not None

        def ready() -> None:
            if threading.current_thread() is not self._thread:
                self._post(ready)
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
                        task.spec.args[i] = m.Arg(object_id=oid, owner=arg.owner, in_store=True, node_id=e.node_id)
                    else:
                        task.spec.args[i] = m.Arg(data=e.data)
            if task.done:
                return
            if err is not None:
                self._fail_task(task, err)
                return
            task.unresolved -= 1
            if task.unresolved == 0:
                task.resolved = True
                then(task)

        with self.lock:
            pending = self.refs.add_waiter(oid, ready)
            e = self.refs.get(oid)
            fetch = pending and e is not None and not e.owned
        if fetch:
            self._ensure_fetch(_RefStub(oid, arg.owner))  # type: ignore[arg-type]
        if not pending:
            ready()

    def _key_for(self, task: _Task) -> Any:
        spec = task.spec
        p = spec.placement
        return (
            tuple(sorted(spec.resources.items())),
            tuple(sorted(spec.env_vars.items())),
            (p.kind, p.node_id, p.soft),
            task.retries_left != 0,
        )

    def _enqueue(self, task: _Task) -> None:
        if task.cancelled:
            self._fail_cancelled(task)
            return
        key = self._key_for(task)
        ks = self._keys.get(key)
        if ks is None:
            ks = self._keys[key] = _KeyState(
                task.spec.resources, task.spec.env_vars, task.spec.placement, task.retries_left != 0
            )
            self._warn_if_infeasible(task.spec.resources, task.spec.name)
        task.key = key
        ks.queue.append(task)
        self._pump(ks)

    def _warn_if_infeasible(self, resources: dict[str, float], name: str) -> None:
        """Warns once per resource shape that no node in the cluster can run it."""

        def fits(have: dict[str, float]) -> bool:
            return all(have.get(k, 0.0) + 1e-9 >= v for k, v in resources.items())

        if any("_group_" in k for k in resources):
            return  # a placement group's bundle: it exists once the group is ready
        if fits(self.cluster_resources):
            return  # this node alone can: nothing to check
        assert self.head is not None

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

        self.head.request_cb(m.GetClusterInfo(), on_info)

    def _pump(self, ks: _KeyState) -> None:
        while ks.queue and ks.idle:
            lease = ks.idle.pop()
            task = ks.queue.popleft()
            if task.cancelled:
                self._fail_cancelled(task)
                ks.idle.append(lease)
                continue
            self._dispatch(ks, lease, task)
        want = min(len(ks.queue), MAX_LEASE_REQUESTS) - ks.requests
        for _ in range(max(0, want)):
            self._request_lease(ks)

    def _request_lease(self, ks: _KeyState) -> None:
        ks.requests += 1
        assert self.agent is not None
        self._ask_agent(ks, self.agent, spilled=False)

    def _ask_agent(self, ks: _KeyState, agent: Connection, spilled: bool) -> None:
        agent.request_cb(
            m.RequestLease(
                job_id=self.job_id, resources=ks.resources, env_vars=ks.env_vars,
                spilled=spilled, placement=ks.placement, retriable=ks.retriable,
            ),
            lambda reply: self._on_lease(ks, reply, agent),
        )

    def _on_lease(self, ks: _KeyState, reply: Any, agent: Connection) -> None:
        if isinstance(reply, m.LeaseSpill) and reply.node_id in self._dead_nodes:
            self._ask_agent(ks, agent, spilled=True)  # named a node we know is gone
            return
        if isinstance(reply, m.LeaseSpill):
            # Our node is busy or lacks the resources: ask the node it named.
            def on_spill_conn(conn: Any) -> None:
                if isinstance(conn, BaseException):
                    self._ask_agent(ks, agent, spilled=True)  # stay here after all
                else:
                    self._ask_agent(ks, conn, spilled=True)

            self._with_peer(reply.address, on_spill_conn)
            return
        if isinstance(reply, ConnectionLost) and agent is not self.agent and self.agent is not None:
            # The other node went away while we waited: ask our own agent again.
            self._ask_agent(ks, self.agent, spilled=False)
            return
        ks.requests -= 1
        if isinstance(reply, BaseException):
            err = reply if not isinstance(reply, RemoteError) else error_from_remote(reply)
            data = serialize_error(err).to_bytes()
            while ks.queue:
                self._fail_task(ks.queue.popleft(), data)
            return
        lease = _Lease(
            reply.lease_id, reply.worker_id, reply.address, gpu_ids=list(reply.gpu_ids), agent=agent
        )
        self._peer_nodes[reply.address] = reply.node_id
        if not ks.queue:
            # Asked for during a burst that is over: hand it straight back so
            # other owners' work is not held up behind an idle lease.
            self._return_lease(lease)
            return

        def on_conn(conn: Any) -> None:
            if isinstance(conn, BaseException):
                self._return_lease(lease, kill=True)
                self._pump(ks)
                return
            lease.conn = conn
            lease.idle_since = time.monotonic()
            ks.idle.append(lease)
            self._pump(ks)
            self._schedule_sweep()

        self._with_peer(reply.address, on_conn)

    def _dispatch(self, ks: _KeyState, lease: _Lease, task: _Task) -> None:
        lease.task = task
        task.lease = lease
        if lease.gpu_ids or task.spec.gpu_ids:
            task.spec = replace(task.spec, gpu_ids=lease.gpu_ids)
        ks.busy.add(lease)
        assert lease.conn is not None
        lease.conn.request_cb(
            m.PushTask(spec=task.spec), lambda r: self._on_task_reply(ks, lease, task, r)
        )

    def _on_task_reply(self, ks: _KeyState, lease: _Lease, task: _Task, reply: Any) -> None:
        lease.task = None
        task.lease = None
        ks.busy.discard(lease)
        if isinstance(reply, BaseException):
            # The worker died (or its connection broke) mid-task.
            self._return_lease(lease, kill=True)
            if task.cancelled:
                self._fail_cancelled(task)
            elif task.retries_left != 0:
                task.retries_left -= 1
                task.spec = replace(task.spec, attempt=task.spec.attempt + 1)
                ks.queue.appendleft(task)
                self.loop.call_later(1.0, self._lease_kills.pop, _lease_key(lease, self.agent), None)
            else:
                # The agent's word on why it killed the worker may trail the
                # broken connection by a moment: give it that moment.
                self.loop.call_later(0.1, self._fail_lost_task, task, lease, reply)
            self._pump(ks)
            return
        lease.idle_since = time.monotonic()
        ks.idle.append(lease)
        if reply.error is not None and self._should_retry_error(task, reply.error):
            task.retries_left -= 1
            task.spec = replace(task.spec, attempt=task.spec.attempt + 1)
            ks.queue.appendleft(task)
        else:
            self._complete_task(task, reply)
        self._pump(ks)
        if not ks.queue:
            self._schedule_sweep()

    def _fail_lost_task(self, task: _Task, lease: _Lease, reply: BaseException) -> None:
        name = task.spec.name
        lost: BaseException
        killed_because = self._lease_kills.pop(_lease_key(lease, self.agent), "")
        if killed_because:
            lost = exc.OutOfMemoryError(
                f"Task {name}() was killed because its node ran low on memory: {killed_because}. "
                f"No retries left (max_retries). Use less memory per task, or fewer tasks at once "
                f"(more num_cpus or a memory resource per task)."
            )
        elif isinstance(reply, PeerNodeDied):
            lost = exc.NodeDiedError(f"{name}() was running on a node that died ({reply}); no retries left (max_retries).")
        else:
            lost = exc.WorkerCrashedError(
                f"The worker running {name}() died unexpectedly ({reply}); no retries left (max_retries)."
            )
        self._fail_task(task, serialize_error(lost).to_bytes())

    def _should_retry_error(self, task: _Task, error: bytes) -> bool:
        if task.retries_left == 0 or task.cancelled or not task.retry_exceptions:
            return False
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

    def _complete_task(self, task: _Task, reply: m.TaskDone) -> None:
        if task.done:
            return
        task.done = True
        if reply.error is not None:
            for rid in task.return_ids:
                self._set_ready(rid, reply.error, is_error=True)
        else:
            for ret in reply.returns:
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
                self._run_commands(cmds)
            if task.spec.actor_id is None and any(r.in_store and r.node_id != self.node_id for r in reply.returns):
                self._keep_lineage(task, reply)
        self._finish_task(task)

    def _fail_cancelled(self, task: _Task) -> None:
        self._fail_task(task, serialize_error(exc.TaskCancelledError(task.spec.task_id.hex())).to_bytes())

    def _fail_task(self, task: _Task, error: bytes) -> None:
        if task.done:
            return
        task.done = True
        for rid in task.return_ids:
            self._set_ready(rid, error, is_error=True)
        self._finish_task(task)

    def _finish_task(self, task: _Task) -> None:
        for rid in task.return_ids:
            self._tasks_by_return.pop(rid, None)
        task_id = task.spec.task_id
        if task_id in self._lineage:
            if self._lineage.backs_outputs(task_id):
                return  # the lineage holds the argument pins
            self._lineage.drop(task_id)  # a rebuild that failed, or whose outputs went
        self._run_commands(self._unpin_args(task))

    def _unpin_args(self, task: _Task) -> list[Any]:
        if task.args_released:
            return []
        task.args_released = True
        cmds: list[Any] = []
        with self.lock:
            for oid in task.pinned:
                cmds += self.refs.unpin(oid)
        return cmds

    # -- lineage ----------------------------------------------------------

    def _keep_lineage(self, task: _Task, reply: m.TaskDone) -> None:
        """Keeps a finished task while its stored outputs live, to rebuild them.

        Inline outputs live in this process and die with it, and so do those
        in this node's store; those stored on another node may outlive it.
        The task's arguments stay pinned, so a rebuild can run it again
        (recursively, if they were lost too).
        """
        if task.args_released:
            return
        with self.lock:
            live = {
                r.object_id for r in reply.returns
                if r.in_store and r.node_id != self.node_id and r.object_id in self.refs.entries
            }
        size = 256 + len(task.spec.name) + sum(len(a.data or b"") + 64 for a in task.spec.args)
        for old in self._lineage.keep(task.spec.task_id, task, live, size):
            self._run_commands(self._unpin_args(old))

    def _recover(self, oid: bytes, lost_node: bytes) -> None:
        """I/O thread, owner: the stored copy of `oid` on `lost_node` is gone.

        Reruns the task that made it (within its retry budget), or records
        why it cannot be rebuilt: readers get that error instead of hanging.
        """
        with self.lock:
            e = self.refs.get(oid)
            if e is None or not e.owned or not e.state or not e.in_store or (lost_node and e.node_id != lost_node):
                return  # freed, already being rebuilt, or already moved
        task = self._lineage.task_of(oid)
        node = (lost_node or e.node_id).hex()
        err: BaseException | None = None
        if task is None:
            if self._lineage.was_evicted(oid):
                err = exc.ObjectReconstructionFailedLineageEvictedError(
                    oid.hex(), self.address,
                    f"its node {node} died and the lineage to rebuild it was evicted "
                    f"(lineage past max_lineage_bytes={self._lineage.max_bytes})",
                )
            else:
                err = exc.ObjectLostError(
                    oid.hex(), self.address,
                    f"its only copy was on node {node}, which died; objects made by put() "
                    f"or by actor calls cannot be rebuilt from lineage",
                )
        elif task.retries_left == 0:
            err = exc.ObjectReconstructionFailedMaxAttemptsExceededError(
                oid.hex(), self.address,
                f"its node {node} died and {task.spec.name}() that made it has no retries "
                f"left (max_retries) to run again",
            )
        if err is not None:
            self._set_ready(oid, serialize_error(err).to_bytes(), is_error=True)
            return
        assert task is not None
        log.info("rebuilding %s from lineage: running %s() again", oid.hex(), task.spec.name)
        if task.retries_left > 0:
            task.retries_left -= 1
        task.spec = replace(task.spec, attempt=task.spec.attempt + 1)
        cmds: list[Any] = []
        with self.lock:
            for rid in task.return_ids:
                r = self.refs.get(rid)
                if r is None or not r.state:
                    continue
                if r.in_store and r.node_id != e.node_id:
                    cmds.append(FreeStored(rid, r.node_id))  # a surviving copy; replaced
                for cid, _ in r.contained:
                    cmds += self.refs.unpin(cid)
                r.contained = []
                r.state = 0
                r.data = None
                r.in_store = False
                r.is_error = False
                self.refs.pending.add(rid)
        self._lineage.rebuilding(task.spec.task_id)
        self._run_commands(cmds)
        task.done = False
        task.resolved = False
        self._submit_io(task)

    def _relocate(self, ref: ObjectRef, lost_node: bytes) -> None:
        """Any thread but I/O: our copy of `ref` was on a node that is gone.
        Waits until its owner has rebuilt it elsewhere or recorded an error."""
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                return
            owned = e.owned
            if not owned and e.state and e.node_id == lost_node:
                e.state = 0
                e.fetching = False
                self.refs.pending.add(ref._id)
        if owned:
            # Wait until the I/O thread has marked it pending, or the wait
            # below could return at once on the stale copy.
            marked = threading.Event()

            def recover() -> None:
                try:
                    self._recover(ref._id, lost_node)
                finally:
                    marked.set()

            self._post(recover)
            marked.wait()
        else:
            self._post(self._ensure_fetch, ref, lost_node)
        self._wait_ready([ref], 1, None)

    def _return_lease(self, lease: _Lease, kill: bool = False) -> None:
        agent = lease.agent or self.agent
        if agent is not None:
            agent.send(m.ReturnLease(lease_id=lease.lease_id, kill=kill))

    def _schedule_sweep(self) -> None:
        if not self._sweep_scheduled:
            self._sweep_scheduled = True
            self.loop.call_later(LEASE_IDLE_S, self._sweep)

    def _sweep(self) -> None:
        self._sweep_scheduled = False
        now = time.monotonic()
        again = False
        for ks in self._keys.values():
            if ks.queue:
                continue
            keep = []
            for lease in ks.idle:
                if now - lease.idle_since >= LEASE_IDLE_S:
                    self._return_lease(lease)
                else:
                    keep.append(lease)
            ks.idle = keep
            again = again or bool(keep)
        if again:
            self._schedule_sweep()

    # -- cancel -----------------------------------------------------------

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._post(self._cancel_io, ref._id, force)

    def _cancel_io(self, oid: bytes, force: bool) -> None:
        task = self._tasks_by_return.get(oid)
        if task is None or task.done:
            return
        task.cancelled = True
        task.force_cancel = force
        if task.spec.actor_id is not None:
            client = self._actors.get(task.spec.actor_id)
            if client is not None and task in client.queue:
                client.queue.remove(task)
                self._fail_cancelled(task)
            elif client is not None and client.conn is not None:
                client.conn.send(m.CancelTask(task_id=task.spec.task_id, force=False))
            return
        lease = task.lease
        if lease is None:
            ks = self._keys.get(task.key) if task.key is not None else None
            if ks is not None and task in ks.queue:
                ks.queue.remove(task)
            self._fail_cancelled(task)
            return
        if lease.conn is not None:
            lease.conn.send(m.CancelTask(task_id=task.spec.task_id, force=force))

    # -- actors -----------------------------------------------------------

    def create_actor(self, spec: m.ActorSpec, pinned: list[bytes]) -> m.ActorRegistered:
        reply = self.run(self._await_request(self.head, m.CreateActor(spec=spec)))
        client = _ActorClient(spec.actor_id)
        if not reply.existing:
            # Creation arguments stay pinned until the actor has started or died.
            def release(_: Any = None) -> None:
                cmds = []
                with self.lock:
                    for oid in pinned:
                        cmds += self.refs.unpin(oid)
                self._run_commands(cmds)

            self._post(self._watch_creation, spec.actor_id, release)
        else:
            cmds = []
            with self.lock:
                for oid in pinned:
                    cmds += self.refs.unpin(oid)
            self._post(self._run_commands, cmds)
        self._actors.setdefault(reply.actor_id, client)
        return reply  # type: ignore[no-any-return]

    def _watch_creation(self, actor_id: bytes, release: Callable[[Any], None]) -> None:
        assert self.head is not None
        self.head.request_cb(m.WaitActor(actor_id=actor_id, known_epoch=0), release)

    def _actor_client(self, actor_id: bytes) -> _ActorClient:
        # Any thread: setdefault is atomic, so both threads see one client.
        return self._actors.get(actor_id) or self._actors.setdefault(actor_id, _ActorClient(actor_id))

    def submit_actor_task(
        self,
        actor_id: bytes,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        max_task_retries: int,
        name: str,
    ) -> list[ObjectRef]:
        task, refs = self._new_task(
            name, args, kwargs, num_returns,
            actor_id=actor_id, method=method, retries=max_task_retries,
        )
        spec, task_id, return_ids = task.spec, task.spec.task_id, task.return_ids
        client = self._actor_client(actor_id)
        direct = not any(a.object_id is not None for a in spec.args)
        with client.lock:
            if direct and client.direct_ok and not client.posted and not client.inflight:
                # Fast path for a caller waiting on each call: straight from
                # this thread to the actor's socket. With calls in flight the
                # I/O thread's batched writes are cheaper (a socket write that
                # wakes the peer costs ~30 us here).
                conn = client.conn
                assert conn is not None
                for rid in return_ids:
                    self._tasks_by_return[rid] = task
                task.resolved = True
                client.inflight[task_id] = task
                epoch = client.epoch
                if conn.request_cb_threadsafe(
                    m.PushTask(spec=spec),
                    lambda r: self._on_actor_reply(client, task, r, epoch),
                ):
                    return refs
                client.inflight.pop(task_id, None)
                client.direct_ok = False
            client.posted += 1
        self._post(self._actor_submit_io, task)
        return refs

    def _actor_submit_io(self, task: _Task) -> None:
        client = self._actor_client(task.spec.actor_id)  # type: ignore[arg-type]
        with client.lock:
            client.posted -= 1
            client.direct_ok = False
        for rid in task.return_ids:
            self._tasks_by_return[rid] = task
        client.queue.append(task)
        self._resolve(task, lambda t: self._actor_flush(client))

    def _actor_flush(self, client: _ActorClient) -> None:
        if client.dead is not None:
            err = serialize_error(exc.ActorDiedError(error_msg=client.dead, actor_id=client.actor_id.hex())).to_bytes()
            while client.queue:
                self._fail_task(client.queue.popleft(), err)
            return
        conn = client.conn
        if conn is None or conn.closed:
            with client.lock:
                client.direct_ok = False
            self._actor_locate(client)
            return
        while client.queue and client.queue[0].resolved:
            task = client.queue.popleft()
            if task.done:
                continue
            client.inflight[task.spec.task_id] = task
            conn.request_cb(
                m.PushTask(spec=task.spec),
                partial(self._on_actor_reply_to, client, task, client.epoch),
            )
        if not client.queue:
            with client.lock:
                client.direct_ok = not client.posted

    def _actor_locate(self, client: _ActorClient) -> None:
        if client.waiting or client.connecting:
            return
        client.waiting = True
        assert self.head is not None
        self.head.request_cb(
            m.WaitActor(actor_id=client.actor_id, known_epoch=client.epoch),
            lambda r: self._on_actor_state(client, r),
        )

    def _on_actor_state(self, client: _ActorClient, reply: Any) -> None:
        client.waiting = False
        if isinstance(reply, BaseException):
            client.dead = f"the actor could not be located: {reply}"
            self._actor_flush(client)
            return
        if reply.state == "DEAD":
            client.dead = reply.death_cause or "The actor is dead."
            self._actor_flush(client)
            return
        client.epoch = reply.epoch
        client.address = reply.address
        if reply.node_id:
            self._peer_nodes[reply.address] = reply.node_id
        client.connecting = True

        def on_conn(conn: Any) -> None:
            client.connecting = False
            if isinstance(conn, BaseException):
                # Dead before we reached it: ask the head again.
                self._actor_locate(client)
                return
            client.conn = conn
            self._actor_flush(client)

        self._with_peer(reply.address, on_conn)

    def _on_actor_reply_to(self, client: _ActorClient, task: _Task, epoch: int, reply: Any) -> None:
        self._on_actor_reply(client, task, reply, epoch)

    def _on_actor_reply(self, client: _ActorClient, task: _Task, reply: Any, epoch: int) -> None:
        client.inflight.pop(task.spec.task_id, None)
        if isinstance(reply, BaseException):
            with client.lock:
                client.direct_ok = False
            if client.conn is not None and client.conn.closed:
                client.conn = None
            if task.cancelled:
                self._fail_cancelled(task)
            elif task.retries_left != 0:
                task.retries_left -= 1
                task.spec = replace(task.spec, attempt=task.spec.attempt + 1)
                # Keep submission order among the calls being retried.
                client.queue.appendleft(task)
                ordered = sorted(client.queue, key=lambda t: t.spec.task_id[8:])
                client.queue = collections.deque(ordered)
            else:
                self._fail_actor_call(client, task, reply, epoch)
            self._actor_flush(client)
            self._maybe_release_idle(client)
            return
        self._complete_task(task, reply)
        self._maybe_release_idle(client)

    def _fail_actor_call(self, client: _ActorClient, task: _Task, reply: BaseException, epoch: int) -> None:
        """An in-flight call lost its actor and may not be retried: asks the head
        whether the actor is coming back (ActorUnavailableError, as in Ray) or
        is dead for good (ActorDiedError, with the head's cause)."""
        assert self.head is not None
        aid = client.actor_id

        def fail(state: Any) -> None:
            if isinstance(state, BaseException) or state.state == "DEAD":
                cause = "" if isinstance(state, BaseException) else state.death_cause
                err: BaseException = exc.ActorDiedError(
                    error_msg=(
                        f"The actor died while running {task.spec.name}(): "
                        f"{cause or reply}. Check the actor's log for the cause."
                    ),
                    actor_id=aid.hex(),
                )
            else:
                err = exc.ActorUnavailableError(
                    error_msg=(
                        f"The actor {aid.hex()} is unavailable: its worker died while running "
                        f"{task.spec.name}() ({reply}) and it is being restarted. The task may or "
                        f"may not have been executed on the actor."
                    ),
                    actor_id=aid.hex(),
                )
            self._fail_task(task, serialize_error(err).to_bytes())

        def on_now(state: Any) -> None:
            if isinstance(state, BaseException) or state.restartable or state.state == "DEAD":
                fail(state)
            else:
                # The head has not seen the worker go yet: wait for its verdict.
                self.head.request_cb(m.WaitActor(actor_id=aid, known_epoch=epoch), fail)  # type: ignore[union-attr]

        self.head.request_cb(m.WaitActor(actor_id=aid, known_epoch=epoch, now=True), on_now)

    def actor_handle_added(self, actor_id: bytes) -> None:
        with self.lock:
            self.actor_handle_counts[actor_id] = self.actor_handle_counts.get(actor_id, 0) + 1

    def actor_handle_removed(self, actor_id: bytes, releasable: bool) -> None:
        if self.closing:
            return
        with self.lock:
            n = self.actor_handle_counts.get(actor_id, 0) - 1
            if n > 0:
                self.actor_handle_counts[actor_id] = n
                return
            self.actor_handle_counts.pop(actor_id, None)
            shared = actor_id in self.shared_actors
        if releasable and not shared:
            self._post(self._release_actor, actor_id)

    def _release_actor(self, actor_id: bytes) -> None:
        # Calls already submitted keep the actor alive (as in Ray), so
        # `A.remote().f.remote()` works though the handle is gone at once.
        client = self._actors.get(actor_id)
        if client is not None and (client.queue or client.inflight or client.posted):
            client.release_when_idle = True
            return
        if self.head is not None:
            self.head.send(m.ReleaseActor(actor_id=actor_id))

    def _maybe_release_idle(self, client: _ActorClient) -> None:
        if client.release_when_idle and not (client.queue or client.inflight or client.posted):
            client.release_when_idle = False
            if client.actor_id not in self.actor_handle_counts:
                self._release_actor(client.actor_id)

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.run(self._await_request(self.head, m.KillActor(actor_id=actor_id, no_restart=no_restart)))

    def get_named_actor(self, name: str, namespace: str) -> m.ActorState:
        return self.run(  # type: ignore[no-any-return]
            self._await_request(self.head, m.GetNamedActor(name=name, namespace=namespace))
        )

    # -- incoming messages ------------------------------------------------

    def _handle(self, conn: Connection, msg: Any) -> None:
        t = type(msg)
        if t is m.PushTask:
            if self.executor is None:
                conn.reply_error(msg, m.ErrorKind.SYSTEM, "this process does not run tasks")
                return
            self.executor.on_push(conn, msg)
        elif t is m.GetObject:
            self._serve_get(conn, msg)
        elif t is m.AddBorrow:
            bad = []
            with self.lock:
                for oid in msg.object_ids:
                    if not self.refs.add_borrower(oid, msg.borrower):
                        bad.append(oid)
            if bad:
                conn.reply_error(msg, m.ErrorKind.FREED, bad[0].hex())
            else:
                conn.reply(msg, m.Ack())
                self.watch_borrower(msg.borrower)
        elif t is m.RemoveBorrow:
            cmds = []
            with self.lock:
                for oid in msg.object_ids:
                    cmds += self.refs.remove_borrower(oid, msg.borrower)
            self._run_commands(cmds)
        elif t is m.CancelTask:
            if self.executor is not None:
                self.executor.cancel(msg.task_id, msg.force)
        elif t is m.LogLines:
            if self.on_log is not None:
                self.on_log(msg)
        elif t is m.NodeDied:
            self._node_died(msg.node_id, msg.reason)
        elif t is m.LeaseKilled:
            self._lease_kills[(id(conn), msg.lease_id)] = msg.reason
        else:
            log.warning("unexpected %s from %s", t.__name__, conn.name)

    def _node_died(self, node_id: bytes, reason: str) -> None:
        """Drops every connection into a dead node: its tasks fail over as if
        their workers had crashed (retried elsewhere, within their budgets)."""
        self._dead_nodes.add(node_id)
        err = PeerNodeDied(f"node {node_id.hex()} died: {reason}")
        dead = {a for a, n in self._peer_nodes.items() if n == node_id}
        agent = self._node_addresses.get(node_id)
        if agent is not None:
            dead.add(agent)
        for address in dead:
            conn = self._peers.get(address)
            if conn is not None:
                conn.abort(str(err), err)

    def _serve_get(self, conn: Connection, msg: m.GetObject) -> None:
        oid = msg.object_id

        def answer() -> None:
            with self.lock:
                e = self.refs.get(oid)
                if e is None:
                    conn.reply_error(msg, m.ErrorKind.FREED, oid.hex())
                    return
                conn.reply(
                    msg,
                    m.ObjectValue(
                        object_id=oid, data=e.data, in_store=e.in_store,
                        is_error=e.is_error, node_id=e.node_id,
                    ),
                )

        def on_ready() -> None:
            if threading.current_thread() is self._thread:
                answer()
            else:
                self._post(answer)

        if msg.lost_node:
            self._recover(oid, msg.lost_node)
        with self.lock:
            e = self.refs.get(oid)
            if e is None:
                conn.reply_error(msg, m.ErrorKind.FREED, oid.hex())
                return
            pending = self.refs.add_waiter(oid, on_ready)
        if not pending:
            answer()

    # -- logs -------------------------------------------------------------

    def send_log(self, driver: str, msg: m.LogLines) -> None:
        """I/O thread: forwards task output to the job's driver."""
        if not driver:
            return
        self._with_peer(driver, lambda c: c.send(msg) if isinstance(c, Connection) else None)


def _lease_key(lease: _Lease, local_agent: Connection | None) -> tuple[int, int]:
    return id(lease.agent or local_agent), lease.lease_id


def _ignore(_: Any) -> None:
    pass


def _send_to(msg: Any, conn: Any) -> None:
    """A `_with_peer` callback that sends `msg` if the peer was reached."""
    if isinstance(conn, Connection):
        conn.send(msg)


class _RefStub:
    """Enough of an ObjectRef for `_ensure_fetch`, without counting a reference."""

    __slots__ = ("_id", "_owner")

    def __init__(self, oid: bytes, owner: str) -> None:
        self._id = oid
        self._owner = owner
