"""The head: jobs, functions, actors, named actors and the node list.

No object traffic passes through here. Actors are placed by asking a node
agent for a dedicated worker lease and sending the creation task to that
worker; callers then talk to the actor directly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.auth.tls_contexts import load_contexts
from manta._private.clock import Clock, monotonic
from manta._private.config import Config
from manta._private.control import actors as actor_texts
from manta._private.control import placement_groups as pgs
from manta._private.control import task_states as ts
from manta._private.control.actors import ALIVE, DEAD, PENDING, RESTARTING, ActorEntry
from manta._private.control.liveness import NodeLiveness
from manta._private.control.placement_groups import PGEntry
from manta._private.control.task_states import TaskStates
from manta._private.head import state as state_api
from manta._private.head import tools as head_tools
from manta._private.head.access import TOKEN_MESSAGES, HeadAccess
from manta._private.head.bounds import Bounds, FunctionTable, KvTable
from manta._private.head.certs import CertIssuer, refuse_without_ca
from manta._private.head.clients import MESSAGES as CLIENT_MESSAGES
from manta._private.head.clients import ClientSessions
from manta._private.head.quotas import HeadQuotas
from manta._private.head.storage import ActorRecord, MemoryStorage, PGRecord, Storage, decode, encode
from manta._private.protocol import auth_messages as am
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Principal
from manta._private.scheduling.bundles import plan
from manta._private.scheduling.cluster_view import ViewLog
from manta._private.scheduling.policy import NodeView, Unschedulable, choose_node, labels_match, node_labels
from manta._private.scheduling.resources import to_units
from manta._private.transport import peercred
from manta._private.transport.connection import Connection, ConnectionLost, RemoteError, connect, serve
from manta._private.transport.gate import Gate, Limits

log = logging.getLogger(__name__)

# How often pending placement groups are planned again when no report changed (see NodeResources).
PG_RETRY_S = 1.0


@dataclass(eq=False)
class Job:
    job_id: int
    namespace: str
    pid: int
    conn: Connection | None  # None: restored from storage, its driver not back yet
    alive: bool = True
    start_time: float = 0.0
    end_time: float = 0.0
    token_id: str = ""

    def info(self) -> m.JobInfo:
        return m.JobInfo(
            self.job_id, self.namespace, self.pid, self.alive, self.start_time, self.end_time, self.token_id
        )


@dataclass(eq=False)
class Node:
    node_id: bytes
    address: str
    resources: dict[str, float]
    available: dict[str, float]
    store_capacity: int
    conn: Connection | None  # None: restored from storage, not re-registered yet
    alive: bool = True
    pending: list[tuple[dict[str, float], int]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    # What actors sent here take, until a report of the node's counts them:
    # counted when placing the next ones (a burst spreads over the nodes with
    # room), not in what the node is said to have free. An actor's share is
    # in `asked` until the node answers its lease, then in `placing` until
    # the next report, which (sent after that answer, on the same link)
    # counts it. A report may have left the node before it took the lease:
    # clearing at any report (as before) let the head see a taken CPU as
    # free, and at 500 simulated nodes sent a fifth actor to a full 4-CPU
    # node, where it waited while 499 nodes were free.
    placing: dict[str, float] = field(default_factory=dict)
    asked: dict[bytes, dict[str, float]] = field(default_factory=dict)

    def free_for_placing(self) -> dict[str, float]:
        if not self.placing and not self.asked:
            return self.available
        taken = dict(self.placing)
        for need in self.asked.values():
            for k, v in need.items():
                taken[k] = taken.get(k, 0.0) + v
        return {k: max(0.0, v - taken.get(k, 0.0)) for k, v in self.available.items()}

    def reported(self, available: dict[str, float]) -> None:
        """A report of what is free: it counts the leases answered before it, not those still asked."""
        self.available = available
        self.placing = {}

    def answered(self, actor_id: bytes) -> None:
        """The node answered the lease for `actor_id`: its share stays until the next report."""
        for k, v in self.asked.pop(actor_id, {}).items():
            self.placing[k] = self.placing.get(k, 0.0) + v

    @classmethod
    def of(cls, info: m.NodeInfo, conn: Connection | None) -> Node:
        return cls(info.node_id, info.address, dict(info.resources), dict(info.available),
                   info.store_capacity, conn, info.alive, list(info.pending), dict(info.labels))

    def info(self) -> m.NodeInfo:
        return m.NodeInfo(self.node_id, self.address, self.alive, self.resources, self.available,
                          self.store_capacity, self.pending, self.labels)

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def send(self, msg: Any) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.send(msg)

    def request(self, msg: Any) -> asyncio.Future[Any]:
        if self.conn is None:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(ConnectionLost("the node has not re-registered"))
            return fut
        return self.conn.request(msg)

    def request_cb(self, msg: Any, callback: Any) -> None:
        if self.conn is None:
            callback(ConnectionLost("the node has not re-registered"))
        else:
            self.conn.request_cb(msg, callback)


class Head:
    def __init__(
        self, *, token: bytes, addresses: list[str], embedded: bool, storage: Storage | None = None,
        config: Config | None = None, clock: Clock = monotonic, audit_log: str | None = None, session_dir: str = "",
    ) -> None:
        self.config = config or Config()
        self.limits = Limits.of(self.config)
        self.token = token
        keys = ClusterKeys(token)
        self.identity = Identity.of(keys.node_credential("head"))
        # TLS on its TCP listeners when the session has certificates; signs nodes' CSRs with the CA's key.
        self.identity.tls = load_contexts(session_dir)
        self.certs = CertIssuer.of(session_dir, self.config.tls_cert_days)
        self.session_dir = session_dir  # where head-side files live (submitted jobs' logs and dirs)
        # Who may do what, and people's tokens.
        self.access = HeadAccess(self, keys, audit_log)
        self.storage = storage or MemoryStorage()
        self.kv = KvTable()  # counts entries and bytes per namespace, for `bounds`
        self.listen = addresses
        self.addresses: list[str] = []
        self.embedded = embedded
        self.servers: list[asyncio.AbstractServer] = []
        self.jobs: dict[int, Job] = {}
        # This machine's agent, once it registered: its pid, its store's
        # descriptor there and its address (for entrypoints: jobs/as_user.py).
        self.local_agent: tuple[int, int, str] | None = None
        self._job_ids = itertools.count(1)
        self.functions = FunctionTable()  # counts its bytes, for `bounds`
        self.actors: dict[bytes, ActorEntry] = {}
        self.named: dict[tuple[str, str], bytes] = {}
        self.nodes: dict[bytes, Node] = {}
        self.actor_by_worker: dict[bytes, bytes] = {}
        # Non-detached actors by the worker that created them: they end with it.
        self.actors_by_owner: dict[bytes, list[bytes]] = {}
        self.peers: dict[str, Connection] = {}
        self.stopping = asyncio.Event()
        self._view_scheduled = False
        self._view_dirty: set[bytes] = set()  # nodes to send again in the next view
        self.view_log: ViewLog[Connection] = ViewLog()
        self._spread_turn = 0
        self.pgs: dict[bytes, PGEntry] = {}
        self.conns: set[Connection] = set()
        self.clock = clock
        # When pending placement groups are next planned on a report that changed nothing.
        self._pg_retry_at = 0.0
        # A node silent this long is dead (the agents beat every config.heartbeat_s).
        self.liveness = NodeLiveness(self.config.node_timeout_s)
        # What every process sent of its tasks: the state API's list_tasks.
        self.task_states = TaskStates(self.config.max_task_states)
        # The state API's workers, objects, runtime envs and jobs.
        self.state_queries = state_api.StateQueries(self)
        self.tools = head_tools.HeadTools(self)  # manta logs, stack, memory
        self.bounds = Bounds(self)
        self.quotas = HeadQuotas(self)
        self.session_dir = session_dir
        self.clients = ClientSessions(self)  # remote drivers' sessions (manta://)

    async def start(self) -> None:
        self.storage.check_token(self.token)
        self._restore()
        gate = Gate(self.limits)
        for address in self.listen:
            kind, _, path = address.partition(":")
            if kind == "unix" and os.path.exists(path):
                os.unlink(path)  # left by a head that was killed
            server, bound = await serve(
                address, self.identity, self.handle, on_close=self.on_close, on_connect=self.conns.add,
                tokens=self.access.tokens, on_auth=self.access.on_auth, limits=self.limits, gate=gate,
                client_cert_optional=True,  # joining nodes have none yet; the handshake authenticates
            )
            self.servers.append(server)
            self.addresses.append(bound)
        asyncio.get_running_loop().create_task(self._watch_nodes())

    async def _watch_nodes(self) -> None:
        """Declares dead the nodes whose heartbeats stopped (crash, hang, partition)."""
        liveness = self.liveness
        while not self.stopping.is_set():
            await asyncio.sleep(liveness.check_every())
            for nid in liveness.expired(self.clock()):
                node = self.nodes.get(nid)
                if node is not None and node.alive:
                    self._node_dead(nid, f"no heartbeat for {liveness.timeout:g} s")

    def _node_dead(self, node_id: bytes, reason: str) -> None:
        node = self.nodes.get(node_id)
        if node is None or not node.alive:
            return
        log.warning("node %s is dead: %s", node_id.hex(), reason)
        self.access.event("node.leave", node_id.hex(), detail=reason)
        self.liveness.forget(node_id)
        node.alive = False
        self._save_node(node)
        # A frozen agent that wakes up finds its connection gone and stops;
        # restarted, it joins as a new node.
        if node.conn is not None:
            node.conn.abort(f"node declared dead: {reason}")
        for pg in self.pgs.values():
            if pg.node_died(node_id):
                self._save_pg(pg)
        self._place_pending_pgs()
        self._broadcast_view(node_id)
        died = m.NodeDied(node_id=node_id, reason=reason)
        for conn in list(self.conns):
            if not conn.closed and conn is not node.conn:
                conn.send(died)
        for entry in list(self.actors.values()):
            if entry.node_id == node_id and entry.worker_id and entry.state != DEAD:
                self._worker_exited(entry.worker_id, f"its node died ({reason})", -1)

    # -- messages ---------------------------------------------------------

    def handle(self, conn: Connection, msg: Any) -> None:
        if not self.access.allows(conn, msg):
            return
        t = type(msg)
        if t is m.TaskEvents:
            self.task_states.add(msg)
        elif t is m.ListTasks:
            try:
                tasks, total = self.task_states.query(msg.filters, msg.limit)
            except ValueError as e:
                conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
                return
            conn.reply(msg, m.TaskList(tasks=tasks, total=total, dropped=self.task_states.dropped))
        elif t is m.GetFunction:
            blob = self.functions.get(msg.fn_id)
            if blob is None:
                conn.reply_error(msg, m.ErrorKind.KEY, f"function {msg.fn_id.hex()} was never exported")
            else:
                conn.reply(msg, m.FunctionBlob(blob=blob))
        elif t is m.PutFunction:
            if msg.fn_id not in self.functions:
                self.functions[msg.fn_id] = msg.blob
                self.storage.put("functions", msg.fn_id, msg.blob)
            conn.reply(msg, m.Ack())
        elif t is m.WaitActor:
            entry = self.actors.get(msg.actor_id)
            if entry is None:
                conn.reply(msg, m.ActorState(actor_id=msg.actor_id, state=DEAD, address="", epoch=0,
                                             death_cause=actor_texts.NO_SUCH_ACTOR, class_name="", fn_id=b""))
            elif msg.now or entry.answers(msg.known_epoch):
                conn.reply(msg, self._state(entry))
            else:
                entry.waiters.append((conn, msg))
        elif t is m.CreateActor:
            self._create_actor(conn, msg)
        elif t is m.GetNamedActor:
            aid = self.named.get((msg.namespace, msg.name))
            entry = self.actors.get(aid) if aid else None
            if entry is None or entry.state == DEAD:
                conn.reply_error(msg, m.ErrorKind.VALUE, actor_texts.no_named_actor(msg.name, msg.namespace))
            else:
                conn.reply(msg, self._state(entry))
        elif t is m.KillActor:
            entry = self.actors.get(msg.actor_id)
            if entry is None:
                conn.reply_error(msg, m.ErrorKind.VALUE, f"actor {msg.actor_id.hex()} does not exist")
                return
            self._kill_actor(entry, msg.no_restart, actor_texts.KILLED)
            conn.reply(msg, m.Ack())
        elif t is m.ActorExiting:
            entry = self.actors.get(msg.actor_id)
            if entry is not None and entry.state != DEAD:
                # Dies when its worker exits (WorkerExited), with this cause.
                entry.no_restart = True
                entry.death_cause = msg.cause
            conn.reply(msg, m.Ack())
        elif t is m.ReleaseActor:
            entry = self.actors.get(msg.actor_id)
            if entry is not None and not entry.spec.detached:
                self._kill_actor(entry, True, actor_texts.OUT_OF_SCOPE)
        elif t is m.RegisterDriver:
            self._register_driver(conn, msg)
        elif t is m.RegisterNode:
            self._register_node(conn, msg)
        elif t is m.NodeResources:
            node = self.nodes.get(msg.node_id)
            if node is not None:
                self.liveness.beat(msg.node_id, self.clock())
                grew = bool(msg.total) and msg.total != node.resources
                # Most reports are heartbeats that change nothing: then no
                # view goes out (it goes to every node, so a broadcast per
                # heartbeat is n squared: at 2,000 simulated nodes it took
                # the head's whole core, docs/simulation.md), and pending
                # placement groups are planned again over every node at most
                # once a second, not at every heartbeat. Not never: a plan
                # the head's view allowed but a node refused (its report was
                # behind) waits for no change, and Ray's
                # test_get_assigned_resources_in_pg hung without the retry.
                changed = grew or msg.available != node.available or msg.pending != node.pending
                node.reported(msg.available)
                node.pending = msg.pending
                if msg.total:
                    node.resources = msg.total
                now = self.clock()
                if changed:
                    self._broadcast_view(node.node_id)
                if changed or now >= self._pg_retry_at:
                    self._pg_retry_at = now + PG_RETRY_S
                    self._place_pending_pgs()
                if grew:
                    self._schedule_pending_actors()  # e.g. bundles placed again here
        elif t is m.WorkerExited:
            self._worker_exited(msg.worker_id, msg.reason, msg.exit_code)
        elif t is m.GetClusterInfo:
            conn.reply(msg, m.ClusterInfo(nodes=[n.info() for n in self.nodes.values()], storage=self.storage.description,
                                          running_jobs=sum(j.alive for j in self.jobs.values())))
        elif t is m.ShutdownCluster:
            conn.reply(msg, m.Ack())
            self.stopping.set()
        elif t is m.CreatePlacementGroup:
            self._create_pg(conn, msg)
        elif t is m.WaitPlacementGroup:
            pg = self.pgs.get(msg.pg_id)
            if pg is None:
                conn.reply_error(msg, m.ErrorKind.VALUE, f"placement group {msg.pg_id.hex()} does not exist")
            elif pg.answers():
                conn.reply(msg, self._pg_state(pg))
            else:
                pg.waiters.append((conn, msg))
        elif t is m.RemovePlacementGroup:
            pg = self.pgs.get(msg.pg_id)
            if pg is None:
                conn.reply_error(msg, m.ErrorKind.VALUE, f"placement group {msg.pg_id.hex()} does not exist")
                return
            self._remove_pg(pg, "removed by remove_placement_group()")
            conn.reply(msg, m.Ack())
        elif t in (m.KvPut, m.KvGet, m.KvDel, m.KvList):
            conn.reply(msg, self._kv(msg, conn.principal))
        elif t is m.ListActors:
            conn.reply(msg, m.ActorList(actors=[self._actor_info(e) for e in self.actors.values()]))
        elif t is m.GetPlacementGroups:
            groups = [
                self._pg_state(pg) for pg in self.pgs.values()
                if not msg.name or (pg.spec.name == msg.name and pg.spec.namespace == msg.namespace
                                    and pg.state is not pgs.REMOVED)
            ]
            conn.reply(msg, m.PlacementGroupList(groups=groups))
        elif t in state_api.HANDLED:
            self.state_queries.handle(conn, msg)
        elif t in head_tools.HANDLED:
            self.tools.handle(conn, msg)
        elif t in CLIENT_MESSAGES:
            self.clients.handle(conn, msg)
        elif t in TOKEN_MESSAGES:
            self.access.handle_token(conn, msg)
        elif t is am.Rebind:
            self.access.rebind(conn, msg)
        elif t is am.IssueCert:
            (self.certs.handle if self.certs else refuse_without_ca)(conn, msg)
        else:
            log.warning("unexpected %s", t.__name__)

    # -- registration -----------------------------------------------------

    def _register_driver(self, conn: Connection, msg: m.RegisterDriver) -> None:
        job = self.jobs.get(msg.job_id) if msg.job_id else None
        if job is None:
            job_id = msg.job_id or next(self._job_ids)
            namespace = msg.namespace or f"anonymous-{os.urandom(8).hex()}"
            job = self.jobs[job_id] = Job(
                job_id, namespace, msg.pid, conn, start_time=time.time(), token_id=conn.principal.token_id
            )
        else:
            log.info("the driver of job %d is back", job.job_id)
            job.conn = conn
            job.alive = True
        conn.peer = ("driver", job.job_id)
        self._save_job(job)
        blob = sig = b""
        if msg.key:
            # From here on, this connection acts as the job.
            conn.principal, blob, sig = self.access.job_pass(conn.principal, job.job_id, job.namespace, msg)
        conn.reply(msg, m.DriverRegistered(
            job_id=job.job_id, namespace=job.namespace, persistent=self.storage.persistent,
            pass_blob=blob, pass_sig=sig, cluster_key=self.identity.credential.cluster_key,
        ))

    def _register_node(self, conn: Connection, msg: m.RegisterNode) -> None:
        nid = msg.node.node_id
        known = self.nodes.get(nid)
        if known is not None and not known.alive:
            # Declared dead already: its work has moved. It must join anew.
            conn.reply_error(
                msg, m.ErrorKind.RUNTIME,
                "this node was declared dead while the head could not reach it; restart it to join again",
            )
            return
        self.nodes[nid] = node = Node.of(msg.node, conn)
        cred = peercred.peer_cred(conn.transport)
        if cred is not None and msg.store_fd >= 0:  # this machine's agent: the kernel names its pid
            self.local_agent = (cred.pid, msg.store_fd, msg.node.address)
        self.liveness.beat(nid, self.clock())
        conn.peer = ("node", nid)
        self._save_node(node)
        conn.reply(msg, m.NodeRegistered(persistent=self.storage.persistent))
        if known is not None:
            self._reconcile_node(node, msg)
        self._broadcast_view(nid)
        self._schedule_pending_actors()
        self._place_pending_pgs()

    def _schedule_pending_actors(self) -> None:
        for entry in list(self.actors.values()):
            if entry.state in (PENDING, RESTARTING) and not entry.worker_id:
                self._schedule_actor(entry)

    def _reconcile_node(self, node: Node, msg: m.RegisterNode) -> None:
        """A node is back after a head restart: match what it runs to what we know."""
        nid = node.node_id
        reported = dict(msg.actor_workers)
        for entry in list(self.actors.values()):
            if entry.node_id == nid and entry.state == ALIVE and entry.worker_id not in reported:
                self._worker_exited(entry.worker_id, "its worker was gone when the head restarted", -1)
        for worker_id, actor_id in reported.items():
            known = self.actors.get(actor_id)
            if known is None or known.state != ALIVE or known.worker_id != worker_id:
                # A creation the old head never saw finish: start it over.
                node.send(m.KillWorker(worker_id=worker_id, force=True))
        for pg_id in msg.bundles:
            pg = self.pgs.get(pg_id)
            if pg is None or pg.state is not pgs.CREATED or nid not in pg.nodes:
                node.send(m.CancelBundles(pg_id=pg_id))

    # -- persistence ------------------------------------------------------

    def _restore(self) -> None:
        """Loads what a previous head on this storage left (nothing, in memory)."""
        tables = self.storage.load()
        if not any(tables.values()):
            return
        now = self.clock()
        self.functions.update(tables["functions"])
        self.access.restore(tables["tokens"])
        for data in tables["jobs"].values():
            info = decode(m.JobInfo, data)
            self.jobs[info.job_id] = Job(
                info.job_id, info.namespace, info.driver_pid, None, info.alive, info.start_time, info.end_time,
                info.token_id,
            )
        self._job_ids = itertools.count(max(self.jobs, default=0) + 1)
        for data in tables["nodes"].values():
            node_info = decode(m.NodeInfo, data)
            self.nodes[node_info.node_id] = Node.of(node_info, None)
            # Declared dead unless it re-registers within the node timeout.
            self.liveness.beat(node_info.node_id, now)
        for data in tables["actors"].values():
            rec = decode(ActorRecord, data)
            entry = ActorEntry(
                rec.spec, state=rec.state, address=rec.address, worker_id=rec.worker_id, node_id=rec.node_id,
                epoch=rec.epoch, restarts=rec.restarts, death_cause=rec.death_cause, no_restart=rec.no_restart,
            )
            if entry.state in (PENDING, RESTARTING):
                entry.worker_id = b""  # any creation in flight is started over
            elif entry.state == ALIVE:
                self.actor_by_worker[entry.worker_id] = entry.actor_id
            self.actors[entry.actor_id] = entry
            self._index_owner(entry)
            if entry.state != DEAD and entry.spec.name:
                self.named[(entry.spec.namespace, entry.spec.name)] = entry.actor_id
        for data in tables["pgs"].values():
            rec_pg = decode(PGRecord, data)
            self.pgs[rec_pg.spec.pg_id] = PGEntry(rec_pg.spec, rec_pg.state, rec_pg.nodes, error=rec_pg.error)
        for key, value in tables["kv"].items():
            ns, _, k = key.partition(b"\0")
            self.kv[(ns.decode(), k)] = value
        log.info("restored from %s: %d jobs, %d nodes, %d actors, %d placement groups, %d KV entries",
                 self.storage.description, len(self.jobs), len(self.nodes), len(self.actors), len(self.pgs), len(self.kv))
        # Drivers that do not come back within the node timeout have exited.
        asyncio.get_running_loop().call_later(self.liveness.timeout, self._reap_absent_jobs)

    def _reap_absent_jobs(self) -> None:
        for job in list(self.jobs.values()):
            if job.alive and job.conn is None:
                self._job_exited(job)

    def _save_job(self, job: Job) -> None:
        self.storage.put("jobs", str(job.job_id).encode(), encode(job.info()))

    def _save_node(self, node: Node) -> None:
        self.storage.put("nodes", node.node_id, encode(node.info()))

    def _save_actor(self, e: ActorEntry) -> None:
        rec = ActorRecord(e.spec, e.state, e.address, e.worker_id, e.node_id, e.epoch, e.restarts,
                          e.death_cause, e.no_restart)
        self.storage.put("actors", e.actor_id, encode(rec))

    def _save_pg(self, pg: PGEntry) -> None:
        self.storage.put("pgs", pg.spec.pg_id, encode(PGRecord(pg.spec, pg.state, pg.nodes, pg.error)))

    def _kv(self, msg: Any, writer: Principal) -> m.KvValue:
        ns = msg.namespace
        if type(msg) is m.KvGet:
            return m.KvValue(value=self.kv.get((ns, msg.key)))
        if type(msg) is m.KvPut:
            existed = (ns, msg.key) in self.kv
            if msg.overwrite or not existed:
                self.kv[(ns, msg.key)] = msg.value
                self.quotas.kv_written(writer, ns, msg.key, msg.value)
                self.storage.put("kv", _kv_key(ns, msg.key), msg.value)
            return m.KvValue(count=int(existed))
        if type(msg) is m.KvDel:
            if msg.by_prefix:
                gone = [k for (n, k) in self.kv if n == ns and k.startswith(msg.key)]
            else:
                gone = [msg.key] if (ns, msg.key) in self.kv else []
            for k in gone:
                del self.kv[(ns, k)]
                self.quotas.kv_deleted(ns, k)
                self.storage.delete("kv", _kv_key(ns, k))
            return m.KvValue(count=len(gone))
        keys = [k for (n, k) in self.kv if n == ns and k.startswith(msg.prefix)]
        return m.KvValue(keys=keys)

    # -- placement groups -------------------------------------------------

    def _create_pg(self, conn: Connection, msg: m.CreatePlacementGroup) -> None:
        spec = msg.spec
        if spec.pg_id in self.pgs:
            conn.reply(msg, m.Ack())  # sent again after a head restart
            return
        try:
            bundles = [to_units(b) for b in spec.bundles]
            plan(bundles, spec.strategy, [])  # validates the strategy
        except ValueError as e:
            conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
            return
        if spec.name and any(
            pg.spec.name == spec.name and pg.spec.namespace == spec.namespace and pg.state is not pgs.REMOVED
            for pg in self.pgs.values()
        ):
            conn.reply_error(msg, m.ErrorKind.VALUE, f"a placement group named {spec.name!r} already exists")
            return
        self.pgs[spec.pg_id] = pg = PGEntry(spec)
        self._save_pg(pg)
        conn.reply(msg, m.Ack())
        self._place_pending_pgs()

    def _pg_state(self, pg: PGEntry) -> m.PlacementGroupState:
        return m.PlacementGroupState(spec=pg.spec, state=pg.state, nodes=pg.nodes, error=pg.error)

    def _notify_pg(self, pg: PGEntry) -> None:
        self._save_pg(pg)
        for conn, msg in pg.waiters:
            if not conn.closed:
                conn.reply(msg, self._pg_state(pg))
        pg.waiters = []

    def _place_pending_pgs(self) -> None:
        for pg in self.pgs.values():
            if pg.needs_placement():
                self._place_pg(pg)

    def _place_pg(self, pg: PGEntry) -> None:
        """Places a new group's bundles, or a rescheduled group's lost ones:
        `pg.plan` decides where, this carries out the two phases."""
        alive = {nid: to_units(n.available) for nid, n in self.nodes.items() if n.alive and n.connected}
        p = pg.plan(alive)
        if p is None:
            return  # tried again whenever resources change
        pg_id = pg.spec.pg_id
        by_node = p.by_node(pg.spec.bundles)
        rescheduled = pg.state is pgs.RESCHEDULING

        def cancel(nids: Any) -> None:
            for nid in nids:
                self.nodes[nid].send(m.CancelBundles(pg_id=pg_id, indices=p.indices))

        async def reserve() -> None:
            # Two phases: every node sets its bundles aside, or none keeps any.
            results = await asyncio.gather(
                *(self.nodes[nid].request(m.PrepareBundles(pg_id=pg_id, bundles=b))
                  for nid, b in by_node.items()),
                return_exceptions=True,
            )
            ok = [nid for nid, r in zip(by_node, results) if not isinstance(r, BaseException)]
            if len(ok) != len(by_node) or pg.generation != p.generation:
                cancel(ok)
                self._placement_failed(pg, p)
                return
            commits = await asyncio.gather(
                *(self.nodes[nid].request(m.CommitBundles(pg_id=pg_id)) for nid in by_node),
                return_exceptions=True,
            )
            if any(isinstance(r, BaseException) for r in commits) or not pg.placed(p):
                cancel(by_node)
                self._placement_failed(pg, p)
                return
            self._notify_pg(pg)
            if rescheduled:
                log.info("placement group %s: %d lost bundles placed again", pg_id.hex(), len(p.indices))
                self._schedule_pending_actors()

        asyncio.get_running_loop().create_task(reserve())

    def _placement_failed(self, pg: PGEntry, p: pgs.Plan) -> None:
        pg.placement_failed()
        if pg.generation != p.generation:
            # The group changed meanwhile (a node died): place it anew now.
            # A node that refused is tried again when resources change.
            self._place_pending_pgs()

    def _remove_pg(self, pg: PGEntry, why: str) -> None:
        if not pg.remove(why):
            return
        for nid in set(pg.nodes) or set(self.nodes):
            node = self.nodes.get(nid)
            if node is not None:
                node.send(m.CancelBundles(pg_id=pg.spec.pg_id))
        self._notify_pg(pg)

    def _broadcast_view(self, node_id: bytes) -> None:
        """Sends every agent what changed of `node_id` (coalesced), for spillback."""
        self._view_dirty.add(node_id)
        if self._view_scheduled:
            return
        self._view_scheduled = True

        def send() -> None:
            self._view_scheduled = False
            self._send_view()

        asyncio.get_running_loop().call_later(0.02, send)

    def _send_view(self) -> None:
        """The nodes that have the last view get what changed, the others the
        whole view (`scheduling/cluster_view.py`). Each is encoded once for all:
        at 2,000 simulated nodes, encoding per node was 2,000 encodings."""
        dirty, self._view_dirty = self._view_dirty, set()
        # Most of them: in the table's order, which is the nodes' order in
        # memory. In the set's, a whole view of 10,000 nodes took twice as long.
        order = ([nid for nid in self.nodes if nid in dirty] + [nid for nid in dirty if nid not in self.nodes]
                 if len(dirty) * 4 > len(self.nodes) else list(dirty))
        nodes = [self.nodes.get(nid) for nid in order]
        changed = [n.info() for n in nodes if n is not None and n.alive]
        gone = [nid for nid, n in zip(order, nodes) if n is None or not n.alive]
        links = [n.conn for n in self.nodes.values() if n.alive and n.conn is not None and not n.conn.closed]
        for view, to in self.view_log.broadcast(changed, links, gone):
            header, payload = m.frame_parts(view)
            for conn in to:
                conn.send_encoded(view, header, payload)

    def _state(self, entry: ActorEntry) -> m.ActorState:
        spec = entry.spec
        return m.ActorState(
            actor_id=entry.actor_id, state=entry.state, address=entry.address,
            epoch=entry.epoch, death_cause=entry.death_cause, class_name=spec.class_name,
            fn_id=spec.creation.fn_id, is_async=spec.creation.is_async_actor,
            max_concurrency=spec.creation.max_concurrency,
            node_id=entry.node_id, restartable=entry.restartable(), out_of_order=spec.out_of_order,
            death_kind=entry.death_kind,
        )

    def _actor_info(self, entry: ActorEntry) -> m.ActorInfo:
        spec = entry.spec
        return m.ActorInfo(
            actor_id=entry.actor_id, class_name=spec.qualname or spec.class_name, state=entry.state,
            job_id=spec.job_id,
            name=spec.name, namespace=spec.namespace, node_id=entry.node_id,
            pid=entry.pid if entry.state is m.ActorStatus.ALIVE else 0, death_cause=entry.death_cause,
            detached=spec.detached, restarts=entry.restarts, resources=dict(spec.creation.resources),
        )

    def _notify(self, entry: ActorEntry) -> None:
        self._save_actor(entry)
        keep = []
        for conn, msg in entry.waiters:
            if conn.closed:
                continue
            if entry.answers(msg.known_epoch):
                conn.reply(msg, self._state(entry))
            else:
                keep.append((conn, msg))
        entry.waiters = keep

    # -- actors -----------------------------------------------------------

    def _create_actor(self, conn: Connection, msg: m.CreateActor) -> None:
        spec = msg.spec
        if spec.actor_id in self.actors:
            # Sent again after a head restart: it was registered already.
            conn.reply(msg, m.ActorRegistered(
                actor_id=spec.actor_id, existing=False, class_name=spec.class_name,
                creation_fn_id=spec.creation.fn_id,
            ))
            return
        if spec.name:
            key = (spec.namespace, spec.name)
            existing_id = self.named.get(key)
            existing = self.actors.get(existing_id) if existing_id else None
            if existing is not None and existing.state != DEAD:
                if spec.get_if_exists:
                    conn.reply(msg, m.ActorRegistered(
                        actor_id=existing.actor_id, existing=True,
                        class_name=existing.spec.class_name, creation_fn_id=existing.spec.creation.fn_id,
                    ))
                    return
                conn.reply_error(msg, m.ErrorKind.VALUE, actor_texts.name_taken(spec.name, spec.namespace))
                return
            self.named[key] = spec.actor_id
        entry = ActorEntry(spec)
        self.actors[spec.actor_id] = entry
        self._index_owner(entry)
        self._save_actor(entry)
        self._creation_state(entry, ts.PENDING_NODE_ASSIGNMENT)
        conn.reply(msg, m.ActorRegistered(
            actor_id=spec.actor_id, existing=False, class_name=spec.class_name,
            creation_fn_id=spec.creation.fn_id,
        ))
        self._schedule_actor(entry)

    def _pick_node(self, entry: ActorEntry) -> Node | None:
        """A node that can hold the actor (`policy.choose_node`), or None."""
        creation = entry.spec.creation
        need = to_units(_placement_need(entry.spec))
        p = creation.placement
        selector = entry.spec.label_selector
        alive = [
            NodeView(n.node_id, n.address, to_units(n.resources), to_units(n.free_for_placing()))
            for n in self.nodes.values()
            if n.alive and n.connected and (not selector or labels_match(selector, node_labels(n.node_id, n.labels)))
        ]
        if p.kind is m.PlacementKind.SPREAD:
            self._spread_turn += 1
        try:
            view = choose_node(need, alive, kind=p.kind, target=p.node_id, soft=p.soft, turn=self._spread_turn)
        except Unschedulable as e:
            entry.kill(f"The actor cannot be scheduled: {e}.")
            self._notify(entry)
            return None
        if view is None:
            if alive:
                log.warning(
                    "actor %s needs %s, which no node has; it stays pending until one joins",
                    entry.spec.class_name, creation.resources,
                )
            return None
        return self.nodes[view.node_id]

    def _schedule_actor(self, entry: ActorEntry) -> None:
        if entry.leasing:
            return  # one worker per actor: the lease asked already decides
        node = self._pick_node(entry)
        if node is None:
            return  # scheduled when a node registers
        spec = entry.spec
        env = dict(spec.creation.env_vars)
        need = _placement_need(spec)
        # Counted against the node until a report made after its answer
        # (Node.asked), so a burst of actors spreads over the nodes with room.
        node.asked[spec.actor_id] = need
        entry.leasing = True
        node.request_cb(
            m.RequestLease(
                job_id=spec.job_id, resources=spec.creation.resources, env_vars=env, must_be_free=spec.placing,
                for_actor=True, actor_id=spec.actor_id, retriable=spec.max_restarts != 0,
                job_principal=self.access.job_principal(spec.job_id),
            ),
            lambda r: self._on_actor_lease(entry, node, r),
        )

    def _on_actor_lease(self, entry: ActorEntry, node: Node, reply: Any) -> None:
        entry.leasing = False
        node.answered(entry.actor_id)
        if isinstance(reply, ConnectionLost):
            # The node went away before it answered: its lease went with it.
            # Ask another node (or wait for one to join), as for a restart.
            if entry.state != DEAD:
                self._schedule_actor(entry)
            return
        if isinstance(reply, BaseException):
            if entry.state != DEAD:
                if isinstance(reply, RemoteError) and reply.kind is m.ErrorKind.RUNTIME_ENV_SETUP:
                    # Its calls raise RuntimeEnvSetupError, as in Ray.
                    entry.kill(f"Could not create the actor: its runtime_env could not be set up. {reply.message}",
                               reply.kind)
                else:
                    entry.kill(f"The actor could not be scheduled: {reply}")
                self._notify(entry)
            return
        if entry.state == DEAD:
            node.send(m.ReturnLease(lease_id=reply.lease_id, kill=True))
            return
        entry.worker_id = reply.worker_id
        entry.node_id = reply.node_id
        entry.pid = reply.pid
        self.actor_by_worker[reply.worker_id] = entry.actor_id
        spec = entry.spec
        creation = replace(spec.creation, restart_count=entry.restarts, gpu_ids=list(reply.gpu_ids))
        address = reply.address
        worker_id = reply.worker_id

        async def create() -> None:
            try:
                conn = await self._peer(address)
                done = await conn.request(m.PushTask(spec=creation))
            except (ConnectionLost, OSError) as e:
                # The worker died during creation; WorkerExited decides what next.
                log.info("actor %s creation interrupted: %s", entry.actor_id.hex(), e)
                return
            if entry.state == DEAD or entry.worker_id != worker_id:
                return
            if done.error is not None:
                self.actor_by_worker.pop(worker_id, None)
                entry.no_restart = True
                entry.kill(actor_texts.creation_failed(spec.class_name, done.error_text))
                self._notify(entry)
                self._creation_state(entry, ts.FAILED)
                return
            self._creation_state(entry, ts.FINISHED)
            entry.created(address, worker_id)
            self._notify(entry)

        asyncio.get_running_loop().create_task(create())

    def _creation_state(self, entry: ActorEntry, state: str) -> None:
        """The state API's record of an actor's creation task, which the head runs."""
        c = entry.spec.creation
        self.task_states.record(c.task_id, c.name, ts.ACTOR_CREATION_TASK, c.job_id, c.actor_id, state, time.time())

    async def _peer(self, address: str) -> Connection:
        conn = self.peers.get(address)
        if conn is None or conn.closed:
            conn = await connect(address, self.identity, self.handle, name=address, timeout=10, limits=self.limits)
            self.peers[address] = conn
        return conn

    def _kill_actor(self, entry: ActorEntry, no_restart: bool, cause: str) -> None:
        if entry.state == DEAD:
            return
        if no_restart:
            entry.no_restart = True
        if entry.worker_id:
            for node in self.nodes.values():
                node.send(m.KillWorker(worker_id=entry.worker_id, force=True))
            entry.death_cause = cause
            if no_restart:
                # Its name is free from now, as in Ray, not once its worker's
                # exit is reported: a program that saw the process end and
                # made a new actor of that name was refused (a Ray test).
                self._forget_name(entry)
        elif not no_restart and (entry.spec.max_restarts < 0 or entry.restarts < entry.spec.max_restarts):
            # Killed before it had a worker, and it may restart: that counts
            # as its restart (as in Ray), and the creation under way stands.
            entry.restarts += 1
            self._save_actor(entry)
        else:
            entry.kill(cause)
            self._notify(entry)

    def _index_owner(self, entry: ActorEntry) -> None:
        spec = entry.spec
        if spec.owner_worker and not spec.detached and entry.state != DEAD:
            self.actors_by_owner.setdefault(spec.owner_worker, []).append(spec.actor_id)

    def _worker_exited(self, worker_id: bytes, reason: str, code: int) -> None:
        for owned_id in self.actors_by_owner.pop(worker_id, ()):
            owned = self.actors.get(owned_id)
            if owned is not None:
                self._kill_actor(owned, True, "The actor died because its owner has died "
                                              f"(the worker {worker_id.hex()} that created it exited: {reason}).")
        actor_id = self.actor_by_worker.pop(worker_id, None)
        entry = self.actors.get(actor_id) if actor_id else None
        if entry is None or entry.state == DEAD or entry.worker_id != worker_id:
            return
        cause = entry.death_cause or (
            f"The actor died unexpectedly: its worker process exited ({reason})."
        )
        entry.death_cause = ""
        if entry.died(cause):
            self._notify(entry)
            self._schedule_actor(entry)
        else:
            self._notify(entry)
            self._forget_name(entry)

    def _forget_name(self, entry: ActorEntry) -> None:
        spec = entry.spec
        if spec.name and self.named.get((spec.namespace, spec.name)) == spec.actor_id:
            del self.named[(spec.namespace, spec.name)]

    # -- connections ------------------------------------------------------

    def on_close(self, conn: Connection) -> None:
        self.conns.discard(conn)
        peer = conn.peer
        if not peer:
            return
        kind, ident = peer
        if kind == "driver":
            job = self.jobs.get(ident)
            if job is not None and job.conn is conn:
                self._job_exited(job)
            if self.embedded and not any(j.alive for j in self.jobs.values()):
                log.info("embedded driver gone; stopping the cluster")
                self.stopping.set()
        elif kind == "node":
            node = self.nodes.get(ident)
            if node is not None and node.conn is conn:
                self._node_dead(ident, "its agent disconnected")
        elif kind in ("client", "proxy"):
            self.clients.on_close(conn)

    def _job_exited(self, job: Job) -> None:
        self.access.event("job.end", str(job.job_id), job.namespace)
        job.alive = False
        job.conn = None
        job.end_time = time.time()
        self._save_job(job)
        ended = m.JobEnded(job_id=job.job_id)
        for node in self.nodes.values():
            node.send(ended)
        for entry in list(self.actors.values()):
            if entry.spec.job_id == job.job_id and not entry.spec.detached:
                self._kill_actor(entry, True, "The actor's job (driver) exited.")
        for pg in list(self.pgs.values()):
            if pg.spec.job_id == job.job_id and not pg.spec.detached:
                self._remove_pg(pg, "its job (driver) exited")

    async def stop(self) -> None:
        self.clients.stop()
        ending = not (self.storage.persistent and self.config.stop_keeps_state)  # else a restart: all stays
        waits = [node.request(m.ShutdownCluster()) for node in self.nodes.values() if node.connected and ending]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=2)
        for server in self.servers:
            server.close()
        if ending:  # a deliberate stop ends the cluster: a later head starts afresh
            self.storage.clear()
        self.storage.close()
        for address in self.addresses:
            kind, _, path = address.partition(":")
            if kind == "unix":
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _kv_key(namespace: str, key: bytes) -> bytes:
    """A KV entry's key in storage: its namespace, a NUL, the key (split back in _restore)."""
    return namespace.encode() + b"\0" + key


def _placement_need(spec: m.ActorSpec) -> dict[str, float]:
    """What must be free where the actor is placed: what it runs with, and
    what only its placement checks for (ActorSpec.placing)."""
    if not spec.placing:
        return spec.creation.resources
    need = dict(spec.creation.resources)
    for k, v in spec.placing.items():
        need[k] = need.get(k, 0.0) + v
    return need
