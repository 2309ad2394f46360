"""The core runtime inside every driver and worker: a facade over its rooms.

It owns the objects this process creates (reference counts, values,
locations), submits tasks to leased workers and actor calls straight to
actor workers, answers borrowers, and reads and writes the node store.
Each of those is a room of its own:

    bridge      the I/O thread, and how user threads reach it
    peers       connections to other processes, by address
    references  ObjectRef hooks, borrowing, freeing
    objects     put / get / wait and the store (the hot paths)
    submission  tasks: arguments, dependencies, and the lease client's I/O
    leasing     ...whose decisions are the sans-IO LeaseClient
    actors      actor calls (decided by the sans-IO ActorQueue) and handles
    recovery    rebuilding lost objects from lineage
    server      messages arriving from peers
    executor    running tasks, in a worker
    task_events the task log's new records to the head, in batches

Threads: the user's thread(s) call the public API; one I/O thread runs an
asyncio loop with every connection. The reference table is guarded by one
lock; the lease client by its own (a caller pushes a task to an idle
leased worker itself); peers and in-flight tasks are touched only on the
I/O thread; each actor's queue by its own lock. The API's hot methods are the rooms'
own, bound here, so a call costs one frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from manta._private.auth.credentials import Identity
from manta._private.auth.ed25519 import PrivateKey
from manta._private.auth.tls_contexts import TlsContexts, load_contexts
from manta._private.clock import Clock, monotonic
from manta._private.config import Config
from manta._private.ids import TaskIds
from manta._private.objectstore.region import Region
from manta._private.private_files import session_subdir
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Credential, Role
from manta._private.runtime.actors import ActorCalls
from manta._private.runtime.bridge import IOThread
from manta._private.runtime.errors import error_from_remote
from manta._private.runtime.executor import Executor
from manta._private.runtime.generators import Streams
from manta._private.runtime.metrics import MetricsRegistry
from manta._private.runtime.objects import Objects
from manta._private.runtime.packaging import package_env
from manta._private.runtime.peers import PeerPool
from manta._private.runtime.recovery import Recovery
from manta._private.runtime.references import References
from manta._private.runtime.refs import ReferenceTable
from manta._private.runtime.serialization import load_function
from manta._private.runtime.server import Inbound
from manta._private.runtime.story import StoryRecord, TaskLog
from manta._private.runtime.submission import Submitter
from manta._private.runtime.task_events import TaskReporter
from manta._private.transport.connection import Connection, ConnectionLost, RemoteError, connect, serve
from manta._private.transport.gate import Limits
from manta._private.transport.link import HeadLink

log = logging.getLogger(__name__)

SessionInfo = m.SessionInfo


class CoreRuntime:
    def __init__(
        self,
        session: m.SessionInfo,
        config: Config,
        *,
        is_driver: bool,
        worker_id: bytes,
        namespace: str = "",
        env_vars: dict[str, str] | None = None,
        on_log: Callable[[m.LogLines], None] | None = None,
        clock: Clock = monotonic,
        code_path: list[str] | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.session = session
        self.config = config
        self.is_driver = is_driver
        self.worker_id = worker_id
        self.clock = clock
        # The job this process works for: a driver's own; a worker adopts
        # each task's (`adopt_job`), so what it starts inherits it, as in Ray.
        self.job_id = 0
        self.namespace = namespace
        self.driver_address = ""
        self.env_vars: dict[str, str] = dict(env_vars or {})
        self.code_path: list[str] = list(code_path or [])
        self.node_id = session.node_id
        if session.node_ip:
            self.address = f"tcp:{session.node_ip}:0"  # the port is known once bound
        else:
            self.address = f"unix:{session.session_dir}/sockets/{worker_id.hex()[:16]}.sock"
        self.on_log = on_log
        self.lock = threading.RLock()
        self.refs = ReferenceTable(self.address)
        self.ids = TaskIds()
        self.log = TaskLog(clock)
        self.io = IOThread()
        self.loop = self.io.loop
        self.post = self.io.post
        self.run = self.io.run
        self.head: HeadLink | None = None
        self.agent: Connection | None = None
        self._server: asyncio.AbstractServer | None = None
        self.region: Region | None = None
        self.store_capacity = 0
        self.cluster_resources: dict[str, float] = {}
        self.closing = False
        # Set when the head or agent connection drops: blocking calls raise it.
        self.control_lost = ""
        self._functions: dict[bytes, Any] = {}
        # runtime_env packages worked out and uploaded: fields -> env entries.
        self.packages: dict[str, dict[str, str]] = {}
        self._exported: set[bytes] = set()
        # What manta.util.metrics records in this process.
        self.metrics = MetricsRegistry()
        # The rooms (see the module docstring).
        self.inbound = Inbound(self)
        # A worker's pass, from its agent; a driver's token, until the head
        # gives it its job's pass (`_register`).
        self.identity = Identity.of(session.credential)
        # A node's drivers and workers use its certificates on TCP (auth.pki);
        # a worker running as --worker-user, which cannot read them, is given
        # them by its fork server (node/zygote.py).
        self.identity.tls = tls if tls is not None else load_contexts(session.session_dir)
        self.limits = Limits.of(config)
        self.peers = PeerPool(
            self.loop, self.identity, self.inbound.handle,
            on_gone=self._peer_gone, ask_nodes=lambda cb: self.ask_head(m.GetClusterInfo(), cb),
            limits=self.limits,
        )
        self.references = References(self)
        self.objects = Objects(self)
        self.recovery = Recovery(self)
        self.tasks = Submitter(self)
        self.streams = Streams(self)
        self.actors = ActorCalls(self)
        self.executor: Executor | None = None if is_driver else Executor(self)
        self.task_events = TaskReporter(self, config.task_events_ms / 1000, config.metrics_report_ms / 1000)
        # The API, bound to the rooms' own methods.
        self.get = self.objects.get
        self.put = self.objects.put
        self.wait = self.objects.wait
        self.future_for = self.objects.future_for
        self.await_ref = self.objects.await_ref
        self.placement_group_ready = self.objects.placement_group_ready
        self.serialize_value = self.objects.serialize_value
        self.write_store = self.objects.write_store
        self.ref_deleted = self.references.ref_deleted
        self.ref_escaped = self.references.escaped
        self.error_of = self.objects.error_of
        self.generator = self.streams.generator
        self.hold_actor = self.actors.hold
        self.deserialized_ref = self.references.deserialized_ref
        self.ref_cap = self.references.cap_of
        self.prepare_args = self.tasks.prepare_args
        self.submit_task = self.tasks.submit_task
        self.cancel = self.tasks.cancel
        self.create_actor = self.actors.create
        self.submit_actor_task = self.actors.submit
        self.kill_actor = self.actors.kill
        self.get_named_actor = self.actors.get_named

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        self.io.start()
        self.run(self._connect_all())

    async def _dial_head(self, head: HeadLink) -> None:
        """A node's first workers are forked while its head may still be
        starting (the two are spawned side by side, services.py), so its
        socket may not be there yet: a worker waits for it, up to 10 s, as
        its agent does. One that gave up at once ended, and the request
        waiting for it (a detached actor's, in a test under load) hung."""
        for attempt in range(200):
            try:
                await head.connect()
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if self.is_driver or attempt == 199:
                    raise
                await asyncio.sleep(0.05)

    async def _connect_all(self) -> None:
        session = self.session
        if self.is_driver:
            os.makedirs(f"{session.session_dir}/sockets", exist_ok=True)
        else:
            session_subdir(f"{session.session_dir}/sockets", 0o755)
        self.head = HeadLink(
            session.head_address, self.identity, self.inbound.handle, on_gone=self._control_gone,
            reregister=self._reregister_driver if self.is_driver else None,
            grace=self.config.head_reconnect_s, limits=self.limits,
        )
        await self._dial_head(self.head)
        if self.is_driver:
            await self._register()
        self._server, self.address = await serve(
            self.address, self.identity, self.inbound.handle, on_close=self.peers._closed, limits=self.limits
        )
        self.refs.me = self.address
        if self.is_driver:
            self.driver_address = self.address
        self.agent = await connect(
            session.agent_address, self.identity, self.inbound.handle, name="agent",
            on_close=self._on_control_lost, expect=Role.CLUSTER, limits=self.limits,
        )
        reply = await self.agent.request(
            m.RegisterClient(
                kind=m.ClientKind.DRIVER if self.is_driver else m.ClientKind.WORKER,
                worker_id=self.worker_id, job_id=self.job_id, pid=os.getpid(), address=self.address,
            )
        )
        self.node_id = self.refs.here = reply.node_id
        self.store_capacity = reply.store_capacity
        if not self.is_driver:
            self.head.persistent = reply.head_persistent
        # Read-only: this process writes only the objects it creates (Region.write).
        if session.store_fd >= 0:  # handed over: a worker's by its fork server, a job's entrypoint's by the head
            self.region = Region.inherited(session.store_fd, reply.store_capacity, writable=False)
        else:
            self.region = Region.attach(reply.store_pid, reply.store_fd, reply.store_capacity, writable=False)
        info = await self.agent.request(m.GetResources())
        self.cluster_resources = dict(info.total)
        self.task_events.start()

    async def _register(self) -> None:
        """Registers the driver's job with the head, which answers with the job's pass:
        what the driver shows agents and workers from here on (its token stays
        for the head, which checks it again whenever the driver reconnects)."""
        assert self.head is not None
        key = PrivateKey.generate()
        reply = await self.head.request(m.RegisterDriver(
            namespace=self.namespace, pid=os.getpid(), env_vars=self.env_vars, worker_id=self.worker_id,
            key=key.public_key().raw(),
        ))
        self.job_id = reply.job_id
        self.namespace = reply.namespace
        self.head.persistent = reply.persistent
        self.identity = Identity.of(Credential(
            pass_blob=reply.pass_blob, pass_sig=reply.pass_sig, key=key.raw(), cluster_key=reply.cluster_key,
        ), tls=self.identity.tls)
        self.peers.identity = self.identity

    async def _reregister_driver(self, conn: Connection) -> None:
        """Tells a restarted head that this driver's job goes on."""
        await conn.request(
            m.RegisterDriver(namespace=self.namespace, pid=os.getpid(), env_vars=self.env_vars, job_id=self.job_id)
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
        self.objects.wake_all()

    def _peer_gone(self, address: str) -> None:
        self.references.peer_gone(address)

    def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True

        async def close() -> None:
            # What this process did last reaches the state API too.
            self.task_events.stop()
            for last in (self.task_events.batch(), self.task_events.metrics()):
                if last is not None:
                    self.send_head(last)
            self.peers.close()
            if self.head is not None:
                self.head.close()
            if self.agent is not None:
                self.agent.close()
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0)

        if self.io.thread is not None:
            try:
                self.run(close(), timeout=5)
            except Exception:
                pass
            self.io.stop()
        # Refs that outlive shutdown must not touch this runtime.
        self.refs.entries.clear()
        if self.region is not None:
            self.region.close()
        if self.address.startswith("unix:"):
            try:
                os.unlink(self.address.partition(":")[2])
            except OSError:
                pass

    # -- the job ------------------------------------------------------------

    def adopt_job(self, spec: m.TaskSpec) -> None:
        """A worker takes on the job of the task it is about to run."""
        self.job_id = spec.job_id
        self.namespace = spec.namespace
        self.driver_address = spec.driver
        self.env_vars = dict(spec.env_vars)
        self.code_path = spec.code_path

    # -- the head and the agent -----------------------------------------------

    async def _await_request(self, conn: Connection | HeadLink | None, msg: Any) -> Any:
        if conn is None:
            raise ConnectionLost("not connected")
        try:
            return await conn.request(msg)
        except RemoteError as e:
            raise error_from_remote(e) from None

    def call_head(self, msg: Any, timeout: float | None = None) -> Any:
        """Any thread but I/O: asks the head, raising the public error it
        answers with (TimeoutError if it has not answered in `timeout` s)."""
        return self.run(self._await_request(self.head, msg), timeout)

    def call_agent(self, msg: Any) -> Any:
        """Any thread but I/O: asks this node's agent, raising the public error it answers with."""
        return self.run(self._await_request(self.agent, msg))

    def call_agent_all(self, msgs: list[Any]) -> list[Any]:
        """Any thread but I/O: asks this node's agent all of `msgs` at once
        (one round of requests, not a round trip each); each answer in order,
        or the public error it was answered with, or the exception."""
        agent = self.agent

        async def ask_all() -> list[Any]:
            if agent is None:
                raise ConnectionLost("not connected")
            replies = await asyncio.gather(*(agent.request(msg) for msg in msgs), return_exceptions=True)
            return [error_from_remote(r) if isinstance(r, RemoteError) else r for r in replies]

        return self.run(ask_all())

    def ask_head(self, msg: Any, callback: Callable[[Any], None]) -> None:
        """I/O thread: asks the head; callback(answer, RemoteError or ConnectionLost)."""
        assert self.head is not None
        self.head.request_cb(msg, callback)

    def send_head(self, msg: Any) -> None:
        """I/O thread."""
        if self.head is not None:
            self.head.send(msg)

    def send_agent(self, msg: Any) -> None:
        """I/O thread."""
        if self.agent is not None:
            self.agent.send(msg)

    def send_log(self, driver: str, msg: m.LogLines) -> None:
        """I/O thread: forwards task output to the job's driver."""
        if driver:
            self.peers.send(driver, msg)

    # -- functions --------------------------------------------------------

    def export_function(self, fn_id: bytes, blob: bytes, original: Any = None) -> None:
        """Stores the pickled function or class with the head once (workers
        load it from there); `original` is for local mode, which runs it."""
        if fn_id in self._exported:
            return
        self.call_head(m.PutFunction(fn_id=fn_id, blob=blob))
        self._exported.add(fn_id)

    def package_env(self, runtime_env: dict[str, Any]) -> dict[str, str]:
        """The environment entries naming the runtime_env's packages and pip
        environment (its packages stored in the cluster once)."""
        return package_env(self, runtime_env)

    def load_function(self, fn_id: bytes) -> Any:
        fn = self._functions.get(fn_id)
        if fn is None:
            reply = self.call_head(m.GetFunction(fn_id=fn_id))
            fn = load_function(fn_id, reply.blob)
            self._functions[fn_id] = fn
        return fn

    # -- the story ----------------------------------------------------------

    def story(self, task_id: bytes) -> list[StoryRecord]:
        """What this process recorded of a task, oldest first (a task
        running here now ends with its "running" step)."""
        records = self.log.story(task_id)
        if self.executor is not None:
            records += self.executor.story_of_running(task_id)
        return records
