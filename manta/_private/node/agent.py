"""The node agent: worker pool, leases and the node's object store.

One per machine. It owns the store region (a memfd every local process
maps), hands out worker leases from the pure `LeaseTable`, forks workers
through the fork server, and reports to the head. All state changes go
through the sans-IO tables; this class only does the I/O they ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from msgspec.structs import replace

from manta._private import ids
from manta._private.auth import policy
from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.auth.tls_contexts import load_contexts
from manta._private.clock import Clock, monotonic
from manta._private.config import Config
from manta._private.node import access, cgroups, memory_kills, worker_user
from manta._private.node.forkserver import ForkServer
from manta._private.node.job_passes import JobPasses
from manta._private.node.limits import limits_of
from manta._private.node.pip_envs import PipEnvironments, SetupFailed
from manta._private.node.pip_policy import PipPolicy
from manta._private.node.pulls import Pulls, error_kind
from manta._private.node.quotas import NodeQuotas
from manta._private.node.reporting import ReportSchedule
from manta._private.node.roster import INTENDED_SYSTEM_EXIT, Roster
from manta._private.node.spill import OutOfDisk, SpillCorrupt, Spilling
from manta._private.node.state import HANDLED as STATE_MESSAGES
from manta._private.node.state import NodeStateAnswers
from manta._private.node.tools import HANDLED as TOOL_MESSAGES
from manta._private.node.tools import NodeTools
from manta._private.node.transfer import ChunkSums
from manta._private.objectstore.region import Region
from manta._private.objectstore.store import StoredObject, StoreError, StoreFull, StoreTable
from manta._private.protocol import auth_messages as am
from manta._private.protocol import messages as m
from manta._private.protocol.framing import HEADER
from manta._private.protocol.identity import Credential, decode_claims
from manta._private.protocol.runtime_env import PIP_ENV, decode_pip, env_hash
from manta._private.scheduling import leases as lt
from manta._private.scheduling.bundles import bundles_resources
from manta._private.scheduling.cluster_view import SpillbackView
from manta._private.scheduling.policy import NodeView, Unschedulable, labels_match, node_labels, place
from manta._private.scheduling.resources import fits, to_float, to_units
from manta._private.transport.connection import AuthRejected, Connection, RemoteError, serve
from manta._private.transport.gate import Gate, Limits
from manta._private.transport.link import HeadLink

log = logging.getLogger(__name__)

# In the environment of workers kept for GPU work.
GPU_WORKER = "MANTA_GPU_WORKER"


def _pip_hash(pool_key: lt.PoolKey) -> str:
    pip = dict(pool_key).get(PIP_ENV)
    return env_hash(decode_pip(pip)) if pip is not None else ""


@dataclass(eq=False)
class Client:
    kind: m.ClientKind
    worker_id: bytes
    job_id: int
    pid: int
    address: str


@dataclass(eq=False)
class PendingLease:
    conn: Connection
    msg: m.RequestLease


@dataclass(eq=False)
class BundleHold:
    """Bundles of one placement group set aside here in one reservation."""

    need: dict[str, int]  # the node's own resources they take
    names: dict[str, int]  # the bundle resources they become once committed
    indices: list[int]
    committed: bool = False


@dataclass(eq=False)
class GrantedLease:
    worker_id: bytes
    owner: Connection
    retriable: bool
    for_actor: bool
    granted: float


class NodeAgent:
    def __init__(
        self,
        *,
        session_dir: str,
        head_address: str,
        token: bytes,
        node_id: bytes,
        resources: dict[str, float],
        store_capacity: int,
        address: str,
        prestart: int = 0,
        fork_server: ForkServer | None = None,
        node_ip: str = "",
        config: Config | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self.config = config or Config()
        self.clock = clock
        self.session_dir = session_dir
        self.head_address = head_address
        # The cluster secret makes this node's pass and its workers' passes;
        # it is never handed to a worker.
        self.keys = ClusterKeys(token)
        self.identity = Identity.of(self.keys.node_credential(f"node {node_id.hex()[:8]}", node_id))
        self.identity.tls = load_contexts(session_dir)  # TLS on TCP when the session has certificates
        self.job_passes = JobPasses(self.keys, node_id)
        self.chunk_sums = ChunkSums(self.keys.transfer_key)
        self.refusals = policy.Refusals(log)
        self.node_id = node_id
        self.resources = resources
        self.address = address
        self.prestart = prestart
        self.node_ip = node_ip
        # What other nodes use to reach this agent: TCP on a multi-machine
        # cluster, else the local socket.
        self.public_address = address
        num_cpus = int(resources.get("CPU", 1))
        self.leases = lt.LeaseTable(
            to_units(resources), max_idle_workers=max(num_cpus, 2) + 2, spares=prestart, prestarted=prestart,
        )
        self.store = StoreTable(store_capacity)
        self.quotas = NodeQuotas()
        self.store.on_gone = self.quotas.gone
        self.spill_dir = self.config.spill_dir or os.path.join(session_dir, "spill")
        self.region = Region.create(store_capacity, "manta-store")
        self.spilling = Spilling(self.store, self.region, self.config, self.spill_dir)
        self.limits = Limits.of(self.config)
        self.head = HeadLink(
            head_address, self.identity, self.handle, on_gone=self._head_gone, reregister=self._reregister,
            grace=self.config.head_reconnect_s, limits=self.limits,
        )
        # Workers that host actors: worker id -> actor id (told to a restarted head).
        self.actor_workers: dict[bytes, bytes] = {}
        self.granted: dict[int, GrantedLease] = {}
        # Workers the memory monitor killed, and why (their exit reason).
        self.oom_killed: dict[bytes, str] = {}
        # Each worker's cgroups (found at start: `cgroups.detect`).
        self.cgroups = cgroups.Cgroups.off("the agent has not started")
        self.worker_user: worker_user.WorkerUser | None = None
        self.server: asyncio.AbstractServer | None = None
        self.tcp_server: asyncio.AbstractServer | None = None
        self.zygote = fork_server or ForkServer(os.path.join(session_dir, "logs", "workers.log"))
        # runtime_env pip environments, and a fork server in each one in use.
        self.pip_envs = PipEnvironments(
            os.path.join(session_dir, "runtime_resources", "pip"),
            PipPolicy.of(self.config.pip_allow_indexes, self.config.pip_allow_packages),
        )
        self.env_zygotes: dict[str, ForkServer] = {}
        self.pending_leases: dict[int, PendingLease] = {}
        self.worker_pids: dict[bytes, int] = {}
        self.worker_conns: dict[bytes, Connection] = {}
        self.pool_keys: dict[bytes, lt.JobKey] = {}
        self.stopping = asyncio.Event()
        self.view = SpillbackView()
        self._spread_turn = 0
        # Placement group bundles held here, by group.
        self.bundles: dict[bytes, list[BundleHold]] = {}
        # Lease requests no node can serve yet, re-examined when the cluster changes.
        self.infeasible: list[tuple[Connection, m.RequestLease]] = []
        self.pulls = Pulls(self)
        # Tasks run in the background (`_spawn`). The loop holds tasks weakly:
        # a fork server's reader, held by nothing else, was collected mid-read
        # ("Task was destroyed but it is pending"), and the agent no longer
        # heard of its workers' forks and exits.
        self.background: set[asyncio.Task[None]] = set()
        # Set once the head has answered this agent's RegisterNode: from then
        # on a worker can be told whether the head is persistent.
        self.joined = asyncio.Event()
        self._prewarm_stop = threading.Event()
        self._prewarmer: threading.Thread | None = None
        self._req_ids = 0
        self.reports = ReportSchedule(self.config.heartbeat_s)
        self._report_timer: asyncio.TimerHandle | None = None
        # The node's processes as the state API lists them, and its answers.
        self.roster = Roster(hidden=(GPU_WORKER,))
        self.state_answers = NodeStateAnswers(self)
        self.tools = NodeTools(self)  # manta logs, stack, memory

    # -- start / stop -----------------------------------------------------

    async def start(self) -> None:
        # Before any socket of ours exists: the sockets directory is opened to the workers' user first.
        self.worker_user = worker_user.for_node(self.config.worker_user, self.session_dir)
        lim, gate = self.limits, Gate(self.limits)
        self.server, self.address = await serve(
            self.address, self.identity, self.handle, on_close=self.on_close, limits=lim, gate=gate
        )
        self.public_address = self.address
        if self.node_ip:
            self.tcp_server, self.public_address = await serve(
                f"tcp:{self.node_ip}:0", self.identity, self.handle, on_close=self.on_close, limits=lim, gate=gate
            )
        self.cgroups = cgroups.for_node(self.node_id.hex()[:8], self.session_dir)
        await self._start_zygote()
        for _ in range(60):
            try:
                await self.head.connect()
                break
            except AuthRejected as e:
                log.error("the head at %s refused this node: %s", self.head_address, e)
                raise
            except (OSError, ConnectionError):
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"cannot reach the head at {self.head_address}")
        reply = await self.head.request(m.RegisterNode(node=self.node_info(), store_fd=self.region.fd))
        self.head.persistent = reply.persistent
        self.joined.set()
        self._start_prewarm()
        self._schedule_report()
        if self.identity.tls is not None:
            # Imported only on a TLS node: x509 costs a process 8 MB and 30 ms (-X importtime).
            from manta._private.node.cert_renewal import start_renewal

            self._renewal = start_renewal(self)
        if self.config.memory_threshold < 1.0:
            self._spawn(memory_kills.watch(self))

    async def _reregister(self, conn: Connection) -> None:
        """Tells a restarted head who we are and what we run."""
        msg = m.RegisterNode(
            node=self.node_info(), actor_workers=list(self.actor_workers.items()),
            bundles=list(self.bundles), store_fd=self.region.fd,
        )
        try:
            await conn.request(msg)
        except RemoteError as e:
            self._head_gone(f"the restarted head refused this node: {e.message}")
            raise

    def node_info(self) -> m.NodeInfo:
        return m.NodeInfo(
            node_id=self.node_id,
            address=self.public_address,
            alive=True,
            resources=self.resources,
            available=to_float(self.leases.available),
            store_capacity=self.store.capacity,
            labels=dict(self.config.labels),
        )

    async def _start_zygote(self) -> None:
        self.zygote.configure(self._fork_config(self.prestart), self.region.fd)
        self._follow(self.zygote)

    def _fork_config(self, prestart: int) -> m.ForkConfig:
        session = m.SessionInfo(
            session_dir=self.session_dir, head_address=self.head_address, agent_address=self.address,
            credential=Credential(cluster_key=self.keys.public), node_id=self.node_id, node_ip=self.node_ip,
        )
        workers = [self._fork_request(ids.new_worker_id(), lt.SPARE) for _ in range(prestart)]
        user = self.worker_user
        return m.ForkConfig(session=session, config=self.config, prestart=workers,
                            worker_uid=user.uid if user else -1, worker_gid=user.gid if user else -1)

    def _fork_request(self, worker_id: bytes, job_id: int, env: dict[str, str] | None = None) -> m.ForkWorker:
        """What the fork server needs to start a worker: its id, its environment and its pass."""
        return m.ForkWorker(worker_id=worker_id, env=env or {}, credential=self.job_passes.credential(worker_id, job_id),
                            cgroups=self.cgroups.create(worker_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` in the background, held until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _follow(self, zygote: ForkServer, env: str = "") -> None:
        self._spawn(self._read_zygote(zygote, env))

    async def _read_zygote(self, zygote: ForkServer, env: str = "") -> None:
        """Follows a fork server's reports; `env` names a pip environment's."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), zygote.stdout)
        while True:
            try:
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                rec = m.decode_fork(await reader.readexactly(size))
            except (asyncio.IncompleteReadError, *m.DecodeError) as e:
                if not isinstance(e, asyncio.IncompleteReadError):
                    log.error("fork server sent a malformed message: %s", e)
                break
            if isinstance(rec, m.WorkerForked):
                self.worker_pids[rec.worker_id] = rec.pid
                self.roster.launched(rec.worker_id, rec.pid)
            elif isinstance(rec, m.WorkerReaped):
                self.roster.reaped(rec.pid, rec.code)
                self.cgroups.sweep()
                for wid, p in list(self.worker_pids.items()):
                    if p == rec.pid:
                        self._worker_gone(wid, f"worker process {rec.pid} exited with code {rec.code}", rec.code)
        if env:
            # Only that environment's workers are affected: a new server
            # starts with the next one asked for. The requests waiting for
            # one of its workers fail, or they would wait forever.
            if self.env_zygotes.get(env) is zygote:
                del self.env_zygotes[env]
            zygote.kill()
            if not self.stopping.is_set():
                self._fail_env_starts(env)
        elif not self.stopping.is_set():
            log.error("fork server exited; stopping the node")
            self.stopping.set()

    def _fail_env_starts(self, env: str, why: str = "") -> None:
        why = why or ("manta's worker cannot start in it (see logs/workers.log in the session directory; "
                      "a package it installs may clash with one manta needs)")
        log.error("pip environment %s: %s", env[:12], why)
        for key in {k for _, k in self.leases.starting if _pip_hash(k) == env}:
            failed, cmds = self.leases.start_failed(key)
            for rid in failed:
                pending = self.pending_leases.pop(rid, None)  # type: ignore[call-overload]
                if pending is not None and not pending.conn.closed:
                    pending.conn.reply_error(
                        pending.msg, m.ErrorKind.RUNTIME_ENV_SETUP,
                        f"the pip environment {decode_pip(dict(key)[PIP_ENV]).packages} was built, but {why}",
                    )
            self._run(cmds)

    def _pip_ready(self, pip: str) -> bool:
        try:
            return self.pip_envs.python_of(decode_pip(pip)) is not None
        except ValueError:
            return False  # refused with the reason by _lease_after_setup

    def _start_worker(self, pool_key: lt.PoolKey, job_id: int) -> None:
        worker_id = ids.new_worker_id()
        self.pool_keys[worker_id] = (job_id, pool_key)
        self.roster.launching(worker_id, pool_key)
        env = dict(pool_key)
        try:
            zygote = self._zygote_for(env)
        except OSError as e:
            # The environment's python is gone (its directory was removed):
            # it is built again for the next request; these ones fail.
            self.pool_keys.pop(worker_id, None)
            self.roster.exit(worker_id, -1, f"its pip environment's python cannot start: {e}")
            digest = _pip_hash(pool_key)
            self.pip_envs.forget(digest)
            asyncio.get_running_loop().call_soon(
                self._fail_env_starts, digest, f"its python could not be started ({e}); it is built again "
                "for the next request")
            return
        zygote.send(self._fork_request(worker_id, job_id, env))

    def _zygote_for(self, env: dict[str, str]) -> ForkServer:
        pip = env.get(PIP_ENV)
        if pip is None:
            return self.zygote
        spec = decode_pip(pip)  # checked when its lease was asked
        digest = env_hash(spec)
        zygote = self.env_zygotes.get(digest)
        if zygote is None:
            python = self.pip_envs.python_of(spec)
            assert python is not None, "a worker of a pip environment not built"
            zygote = self.env_zygotes[digest] = ForkServer(
                os.path.join(self.session_dir, "logs", "workers.log"), python, self.pip_envs.environment(python),
            )
            zygote.configure(self._fork_config(prestart=0), self.region.fd)
            self._follow(zygote, digest)
        return zygote

    async def _lease_after_setup(self, conn: Connection, msg: m.RequestLease, pip: str) -> None:
        """A lease in a pip environment not built here yet: build, then ask again."""
        started = time.monotonic()
        try:
            await self.pip_envs.ensure(decode_pip(pip))
            self.roster.env_built(msg.env_vars, (time.monotonic() - started) * 1000, "")
        except (SetupFailed, ValueError) as e:
            self.roster.env_built(msg.env_vars, (time.monotonic() - started) * 1000, str(e))
            if not conn.closed:
                conn.reply_error(msg, m.ErrorKind.RUNTIME_ENV_SETUP, str(e))
            return
        if not conn.closed and not self.stopping.is_set():
            self.handle(conn, msg)

    def _head_gone(self, why: str) -> None:
        if not self.stopping.is_set():
            log.error("%s; stopping this node", why)
            self.stopping.set()

    def _start_prewarm(self) -> None:
        """Faults in the first `store_prewarm_bytes` of the store, in a thread (`Region.prewarm`)."""
        want = min(self.config.store_prewarm_bytes, self.store.capacity)
        if want <= 0:
            return

        def run() -> None:
            # Below every other thread here and elsewhere: it only gets ahead of later writes.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            started = time.monotonic()
            done = self.region.prewarm(want, self._prewarm_stop)
            log.info("prewarmed %d of %d bytes of the object store in %.2f s", done, want, time.monotonic() - started)

        self._prewarmer = threading.Thread(target=run, name="store-prewarm", daemon=True)
        self._prewarmer.start()

    async def stop(self) -> None:
        self.stopping.set()
        self._prewarm_stop.set()
        for pid in list(self.worker_pids.values()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.zygote.kill()
        for zygote in self.env_zygotes.values():
            zygote.kill()
        self.cgroups.close()
        if self.server is not None:
            self.server.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        kind, _, path = self.address.partition(":")
        if kind == "unix":
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._prewarmer is not None:
            self._prewarmer.join(timeout=1)  # a step is 32 MiB: it stops at the next
        self.region.close()

    # -- commands from the lease table ------------------------------------

    def _run(self, commands: list[lt.Command]) -> None:
        for c in commands:
            if isinstance(c, lt.Grant):
                pending = self.pending_leases.pop(c.request_id, None)  # type: ignore[call-overload]
                if pending is None or pending.conn.closed:
                    self._run(self.leases.return_lease(c.lease_id))
                    continue
                if self.job_passes.needs_binding(c.worker_id, pending.msg.job_id):
                    self._bind_then_grant(c, pending)
                else:
                    self._grant(c, pending)
            elif isinstance(c, lt.Reclaim):
                granted = self.granted.get(c.lease_id)
                if granted is not None and not granted.owner.closed:
                    granted.owner.send(m.ReclaimLease(lease_id=c.lease_id))
            elif isinstance(c, lt.StartWorker):
                self._start_worker(c.pool_key, c.job_id)
            elif isinstance(c, lt.Refuse):
                pending = self.pending_leases.pop(c.request_id, None)  # type: ignore[call-overload]
                if pending is not None and not pending.conn.closed:
                    pending.conn.reply_error(pending.msg, m.ErrorKind.SYSTEM, c.why)
            elif isinstance(c, lt.StopWorker):
                self.roster.ending(c.worker_id, INTENDED_SYSTEM_EXIT, "Stopped by its node agent: idle past the "
                                   "pool's limit, or its lease was given back (an actor's ended).")
                pid = self.worker_pids.get(c.worker_id)
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self._report_resources()

    def _report_resources(self) -> None:
        """Something changed: the head hears of it soon (`ReportSchedule`)."""
        if self.reports.changed(self.clock()):
            self._schedule_report()

    def _schedule_report(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
        delay = max(0.0, self.reports.next_at() - self.clock())
        self._report_timer = asyncio.get_running_loop().call_later(delay, self._send_report)

    def _send_report(self) -> None:
        """Reports when due: after changes, and every heartbeat_s regardless,
        which is the head's sign that this node lives."""
        self._report_timer = None
        if self.stopping.is_set():
            return
        now = self.clock()
        if self.reports.due(now):
            if self.head.up:
                self.head.send(
                    m.NodeResources(
                        node_id=self.node_id,
                        # A resumed `get` may overcommit a CPU for a moment
                        # (`LeaseTable.unblocked`); others see none free.
                        available={k: max(0.0, v) for k, v in to_float(self.leases.available).items()},
                        pending=self._pending_demands(),
                        total=to_float(self.leases.total),
                    )
                )
            self.reports.sent(now)
        self._schedule_report()

    def _grant(self, c: lt.Grant, pending: PendingLease) -> None:
        conn = self.worker_conns.get(c.worker_id)
        client = conn.peer if conn is not None else None
        self.granted[c.lease_id] = GrantedLease(
            c.worker_id, pending.conn, pending.msg.retriable, pending.msg.for_actor, self.clock()
        )
        if pending.msg.for_actor:
            self.actor_workers[c.worker_id] = pending.msg.actor_id
        self.cgroups.limit(c.worker_id, limits_of(pending.msg.resources))
        self.roster.leased(c.worker_id, pending.msg.job_id)
        pending.conn.reply(
            pending.msg,
            m.LeaseGranted(
                lease_id=c.lease_id, worker_id=c.worker_id,
                address=client.address if client else "",
                pid=client.pid if client else 0, node_id=self.node_id,
                gpu_ids=list(c.gpu_ids),
            ),
        )

    def _bind_then_grant(self, c: lt.Grant, pending: PendingLease) -> None:
        """A spare's first lease: it takes the job's pass first (`job_passes`)."""
        conn = self.worker_conns.get(c.worker_id)
        credential = self.job_passes.credential(c.worker_id, pending.msg.job_id)
        if conn is None or conn.closed:
            self._grant(c, pending)  # its exit is on its way: the owner learns of it then
            return

        def bound(reply: Any) -> None:
            if isinstance(reply, Exception):
                log.warning("worker %s did not take its job's pass: %s", c.worker_id.hex()[:8], reply)
            else:
                conn.principal = decode_claims(credential.pass_blob).principal
            if pending.conn.closed:
                self._run(self.leases.return_lease(c.lease_id))
            else:
                self._grant(c, pending)

        conn.request_cb(am.AssumeJob(credential=credential), bound)

    # -- messages ---------------------------------------------------------

    def handle(self, conn: Connection, msg: Any) -> None:
        if access.refused(self.refusals, conn, msg):
            return
        t = type(msg)
        if t is m.RequestLease:
            why = self.job_passes.learn(conn.principal, msg)
            if why:
                conn.reply_error(msg, m.ErrorKind.AUTHORIZATION, why)
                return
            job = self.job_passes.jobs[msg.job_id]
            why = self.quotas.lease_refusal(job, self.pending_leases,
                                            self.job_passes.jobs_of(r for _, r in self.infeasible))
            if why:
                conn.reply_error(msg, m.ErrorKind.QUOTA, why)
                return
            if self._spill(conn, msg):
                return
            pip = msg.env_vars.get(PIP_ENV)
            if pip is not None and not self._pip_ready(pip):
                self._spawn(self._lease_after_setup(conn, msg, pip))
                return
            if len(self.pending_leases) >= self.config.max_pending_demands:
                conn.reply_error(msg, m.ErrorKind.VALUE, "too many lease requests wait here (max_pending_demands)")
                return
            self._req_ids += 1
            rid = self._req_ids
            self.quotas.lease_queued(job, rid)
            self.pending_leases[rid] = PendingLease(conn, msg)
            try:
                units = to_units(msg.resources)
            except ValueError as e:
                self.pending_leases.pop(rid)
                conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
                return
            env = msg.env_vars
            if msg.resources.get("GPU"):
                # GPU work gets workers of its own (as in Ray): a CUDA context
                # and its device memory stay out of CPU tasks' workers.
                env = {**env, GPU_WORKER: "1"}
            req = lt.Request(rid, id(conn), units, tuple(sorted(env.items())), msg.for_actor,
                             to_units(msg.must_be_free) if msg.must_be_free else {}, job_id=msg.job_id)
            self._run(self.leases.request(req))
        elif t is m.ReturnLease:
            granted = self.granted.get(msg.lease_id)
            if granted is None or not access.may_return(conn, granted.owner):
                return  # not the asker's lease (found by the fuzz run: any job could end another's worker)
            del self.granted[msg.lease_id]
            memory_kills.lease_returned(self, conn, msg.lease_id, granted, msg.kill)
            self._run(self.leases.return_lease(msg.lease_id, msg.kill))
        elif t is m.StoreCreate:
            why = self.quotas.store_refusal(conn.principal, msg.size)
            if why:
                conn.reply_error(msg, m.ErrorKind.QUOTA, why)
                return
            try:
                offset = self.create(msg.object_id, msg.size, id(conn))
            except StoreError as e:
                conn.reply_error(msg, error_kind(e), str(e))
                return
            self.quotas.created(conn.principal, msg.object_id, msg.size)
            conn.reply(msg, m.StoreCreated(offset=offset))
        elif t is m.StoreSeal:
            for w in self.store.seal(msg.object_id):
                w(self.store.objects.get(msg.object_id))
            self._spill_past_threshold()
        elif t is m.StorePin:
            self.pin(conn, msg)
        elif t is m.StorePull:
            self._spawn(self.pulls.pull(conn, msg))
        elif t is m.StoreReadChunk:
            self.pulls.read_chunk(conn, msg)
        elif t is m.PrepareBundles:
            need: dict[str, int] = {}
            for _, bundle in msg.bundles:
                for k, v in to_units(bundle).items():
                    need[k] = need.get(k, 0) + v
            indices = {i for i, _ in msg.bundles}
            held = self.bundles.get(msg.pg_id, [])
            if any(indices & set(h.indices) for h in held) or not self.leases.reserve(need):
                conn.reply_error(msg, m.ErrorKind.RUNTIME, "resources are not free on this node any more")
                return
            names = to_units(bundles_resources(msg.pg_id, msg.bundles))
            self.bundles.setdefault(msg.pg_id, []).append(BundleHold(need, names, sorted(indices)))
            conn.reply(msg, m.Ack())
            self._report_resources()
        elif t is m.CommitBundles:
            prepared = [h for h in self.bundles.get(msg.pg_id, []) if not h.committed]
            if not prepared:
                conn.reply_error(msg, m.ErrorKind.RUNTIME, "no prepared bundles for this group")
                return
            for h in prepared:
                h.committed = True
                self._run(self.leases.add_resources(h.names))
            conn.reply(msg, m.Ack())
            self._retry_infeasible()
        elif t is m.CancelBundles:
            holds = self.bundles.get(msg.pg_id, [])
            gone = [h for h in holds if not msg.indices or set(h.indices) <= set(msg.indices)]
            for h in gone:
                holds.remove(h)
                if h.committed:
                    self._run(self.leases.remove_resources(h.names))
                self._run(self.leases.unreserve(h.need))
            if not holds:
                self.bundles.pop(msg.pg_id, None)
        elif t is m.NodeDied:
            # Stop spilling to it before the next view arrives; drop transfers from it.
            dead = self.view.forget(msg.node_id)
            if dead is not None:
                self.pulls.peer_died(dead.address, f"node {msg.node_id.hex()} died: {msg.reason}")
        elif t is m.ClusterView:
            self.view.apply(msg)
            self._retry_infeasible()
        elif t is m.StoreUnpin:
            for oid in msg.object_ids:
                self.store.unpin(oid, id(conn))
        elif t is m.StoreFree:
            for oid in msg.object_ids:
                if self.store.free(oid):
                    self.spilling.files.remove(oid)
        elif t is m.WorkerBlocked:
            self._run(self.leases.blocked(msg.worker_id))
        elif t is m.WorkerUnblocked:
            self._run(self.leases.unblocked(msg.worker_id))
        elif t is m.RegisterClient:
            self._register(conn, msg)
        elif t is m.GetResources:
            conn.reply(
                msg,
                m.Resources(total=self.resources, available=to_float(self.leases.available)),
            )
        elif t is m.KillWorker:
            self.roster.ending(msg.worker_id, INTENDED_SYSTEM_EXIT, "Worker exits because its actor was killed.")
            pid = self.worker_pids.get(msg.worker_id)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        elif t is m.JobEnded:
            self.job_passes.job_ended(msg.job_id)
            self._run(self.leases.job_ended(msg.job_id))
        elif t is m.ShutdownCluster:
            conn.reply(msg, m.Ack())
            self.stopping.set()
        elif t in STATE_MESSAGES:
            self.state_answers.handle(conn, msg)
        elif t in TOOL_MESSAGES:
            self.tools.handle(conn, msg)
        else:
            log.warning("unexpected %s", t.__name__)

    def _pending_demands(self) -> list[tuple[dict[str, float], int]]:
        counts: dict[tuple[tuple[str, float], ...], int] = {}
        for shape, n in self.leases.pending_demands():
            counts[tuple(sorted(shape.items()))] = n
        for _, msg in self.infeasible:
            key = tuple(sorted(msg.resources.items()))
            counts[key] = counts.get(key, 0) + 1
        return [(dict(k), n) for k, n in counts.items()]

    def _retry_infeasible(self) -> None:
        waiting, self.infeasible = self.infeasible, []
        for conn, msg in waiting:
            if not conn.closed:
                # The cluster changed since it was sent here: it may move on.
                self.handle(conn, replace(msg, spilled=False))

    def _spill(self, conn: Connection, msg: m.RequestLease) -> bool:
        """Redirects the request to another node if policy says so; True if it
        did, or if it answered with an error."""
        if msg.for_actor:
            return False
        try:
            need = to_units(msg.resources)
        except ValueError:
            return False
        local = NodeView(self.node_id, self.public_address, self.leases.total, self.leases.available)
        p = msg.placement
        view = self.view.nodes
        if p.selector:
            # Only nodes whose labels match may run it, this one included.
            view = {nid: n for nid, n in view.items()
                    if labels_match(p.selector, self.view.labels.get(nid, {}))}
            if not labels_match(p.selector, node_labels(self.node_id, self.config.labels)):
                return self._spill_by_labels(conn, msg, need, view)
        if p.kind is m.PlacementKind.SPREAD:
            self._spread_turn += 1
        try:
            decision = place(
                need, local, view, may_spill=not msg.spilled,
                kind=p.kind, target=p.node_id, soft=p.soft, turn=self._spread_turn,
            )
        except Unschedulable as e:
            conn.reply_error(msg, m.ErrorKind.UNSCHEDULABLE, str(e))
            return True
        if decision.node is None:
            if decision.infeasible:
                # No node has these resources now; look again whenever the
                # cluster changes (a node joins, a placement group is made).
                log.info("no node has %s yet; the request waits", msg.resources)
                self._park(conn, msg)
                return True
            return False
        conn.reply(msg, m.LeaseSpill(node_id=decision.node.node_id, address=decision.node.address))
        return True

    def _park(self, conn: Connection, msg: m.RequestLease) -> None:
        """Keeps a request no node can serve yet, within the bound on waiting requests."""
        if len(self.infeasible) >= self.config.max_pending_demands:
            conn.reply_error(msg, m.ErrorKind.VALUE, "too many lease requests wait here (max_pending_demands)")
            return
        self.infeasible.append((conn, msg))
        self._report_resources()

    def _spill_by_labels(self, conn: Connection, msg: m.RequestLease, need: Any, view: dict[bytes, NodeView]) -> bool:
        """A task whose label_selector this node does not match goes to a
        matching node with room (or one that has the resources at all);
        with none, it waits for one to join."""
        selector = msg.placement.selector
        matching = [n for nid, n in view.items() if nid != self.node_id]
        pick = next((n for n in matching if fits(need, n.available)), None) or next(
            (n for n in matching if fits(need, n.total)), None)
        if pick is None or msg.spilled:
            log.info("no node has labels matching %s with %s yet; the request waits", selector, msg.resources)
            self._park(conn, msg)
            return True
        conn.reply(msg, m.LeaseSpill(node_id=pick.node_id, address=pick.address))
        return True

    # -- clients ------------------------------------------------------------

    def _register(self, conn: Connection, msg: m.RegisterClient) -> None:
        forked = self.worker_pids.get(msg.worker_id) if msg.kind is m.ClientKind.WORKER else None
        why = access.pid_refusal(conn, msg, forked)
        if why:
            self.refusals.answer(conn, msg, why)
            return
        if not self.joined.is_set():
            # A prestarted worker, here before the head has answered this agent.
            # Told the head was not persistent, it took a later restart of the
            # head for the cluster's end and exited, and the detached actor it
            # ran was lost (a test, under load).
            self._spawn(self._register_when_joined(conn, msg))
            return
        conn.peer = Client(msg.kind, msg.worker_id, msg.job_id, msg.pid, msg.address)
        self.roster.registered(msg.worker_id, msg.pid, msg.kind is m.ClientKind.DRIVER, msg.job_id, conn)
        conn.reply(
            msg,
            m.ClientRegistered(
                node_id=self.node_id, store_pid=os.getpid(), store_fd=self.region.fd,
                store_capacity=self.store.capacity, head_persistent=self.head.persistent,
            ),
        )
        if msg.kind is m.ClientKind.WORKER:
            self.worker_conns[msg.worker_id] = conn
            self.worker_pids[msg.worker_id] = msg.pid
            job_id, key = self.pool_keys.pop(msg.worker_id, (lt.SPARE, ()))
            self._run(self.leases.worker_started(msg.worker_id, key, job_id))

    async def _register_when_joined(self, conn: Connection, msg: m.RegisterClient) -> None:
        await self.joined.wait()
        if not conn.closed:
            self._register(conn, msg)

    # -- spilling ----------------------------------------------------------

    def create(self, oid: bytes, size: int, creator: Any) -> int:
        """Allocates, spilling the oldest unread objects to disk while the store is full."""
        while True:
            try:
                return self.store.create(oid, size, creator)
            except StoreFull:
                victim = self.store.spill_victim() if self.config.spilling else None
                if victim is None:
                    raise
                self.spilling.spill(*victim)

    def _spill_past_threshold(self) -> None:
        """Spills the oldest objects once the store is fuller than the threshold,
        so that new objects find room without waiting for a disk write."""
        limit = self.config.spill_threshold * self.store.capacity
        while self.config.spilling and self.store.used > limit:
            victim = self.store.spill_victim()
            if victim is None:
                return
            try:
                self.spilling.spill(*victim)
            except OutOfDisk as e:
                log.warning("%s", e)
                return

    def pin(self, conn: Connection, msg: m.StorePin) -> None:
        if msg.object_id in self.store.spilled:
            try:
                self.spilling.restore(msg.object_id, self.create)
            except (StoreError, SpillCorrupt) as e:
                conn.reply_error(msg, error_kind(e), str(e))
                return

        def answer(obj: StoredObject | None) -> None:
            if obj is None:
                conn.reply_error(msg, m.ErrorKind.OBJECT_LOST, msg.object_id.hex())
            else:
                conn.reply(msg, m.StorePinned(offset=obj.offset, size=obj.size))

        obj = self.store.pin(msg.object_id, id(conn), answer)
        if obj is not None:
            answer(obj)

    def on_close(self, conn: Connection) -> None:
        for lid in [lid for lid, g in self.granted.items() if g.owner is conn]:
            del self.granted[lid]
        if self.infeasible:
            self.infeasible = [(c, r) for c, r in self.infeasible if c is not conn]
        for w in self.store.client_gone(id(conn)):
            w(None)
        client: Client | None = conn.peer
        for rid, p in list(self.pending_leases.items()):
            if p.conn is conn:
                del self.pending_leases[rid]
        self._run(self.leases.owner_gone(id(conn)))
        if client is not None and client.kind is m.ClientKind.WORKER:
            self._worker_gone(client.worker_id, "the worker's connection closed", None)
        elif client is not None:
            self.roster.exit(client.worker_id, None, "its connection closed")

    def _worker_gone(self, worker_id: bytes, reason: str, code: int | None) -> None:
        memory_kills.worker_gone(self, worker_id)
        self.roster.exit(worker_id, code, reason)
        self.job_passes.forget_worker(worker_id)
        pid = self.worker_pids.pop(worker_id, None)
        conn = self.worker_conns.pop(worker_id, None)
        self.actor_workers.pop(worker_id, None)
        reason = self.oom_killed.pop(worker_id, reason)
        for lid in [lid for lid, g in self.granted.items() if g.worker_id == worker_id]:
            del self.granted[lid]
        if pid is None and conn is None:
            return
        if pid is not None and code is None:
            # The connection dropped first; make sure the process is gone too.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if conn is None:  # it never registered: what waits for it needs another
            self._run(self.leases.start_lost(*self.pool_keys.pop(worker_id, (lt.SPARE, ()))))
        self._run(self.leases.worker_died(worker_id))
        self.head.send(m.WorkerExited(worker_id=worker_id, pid=pid or 0, exit_code=code or 0, reason=reason))


async def run_agent(agent: NodeAgent, ready_fd: int | None) -> None:
    await agent.start()
    if ready_fd is not None:
        os.write(ready_fd, f"READY {agent.address}\n".encode())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stopping.set)
    await agent.stopping.wait()
    await agent.stop()
