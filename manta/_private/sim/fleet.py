"""Many simulated nodes in one process, each a node to a real head.

Each `SimAgent` is what the head and the owners can tell of a node agent:
its own cluster credential (a node pass naming its node id), its own TCP
listener, its own authenticated connection to the head, a `RegisterNode`,
a `NodeResources` report at every heartbeat and soon after each change
(the agent's `ReportSchedule`), and answers to leases, bundles and pushed
tasks (`sim/node.py`). A lease's "worker" is reached at the node's own
address: owners push tasks there and the node answers for the worker.

What the process does not do is decode what it ignores: the head sends
every node the whole cluster's view (`ClusterView`) for spillback, and
simulated nodes never spill (what reaches them was spilled already), so
their head links count those frames and drop them undecoded. Decoding
them here, once per node, would make this process the bottleneck instead
of the head, whose cost is the one measured.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from manta._private import ids
from manta._private.auth import policy
from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.config import Config
from manta._private.node import access
from manta._private.node.reporting import ReportSchedule
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.sim.node import CHANGED, Command, Reply, ReplyError, Send, SimNode
from manta._private.transport.connection import Connection, connect, serve
from manta._private.transport.gate import Gate, Limits

log = logging.getLogger(__name__)

# How a ClusterView frame begins (the array's length, then its tag): the
# frames a simulated node's head link drops undecoded.
_EMPTY_VIEW = m.encode(m.ClusterView(nodes=[]))
VIEW_PREFIX = _EMPTY_VIEW[: _EMPTY_VIEW.index(b"ClusterView") + len("ClusterView")]


class _Dropped:
    """What a dropped frame decodes to: handlers ignore it."""


DROPPED = _Dropped()


@dataclass
class ViewCount:
    """The cluster views the head sent this process's nodes: frames and bytes."""

    frames: int = 0
    size: int = 0  # bytes

    def decoder(self, frame: bytes | bytearray) -> Any:
        if frame[: len(VIEW_PREFIX)] == VIEW_PREFIX:
            self.frames += 1
            self.size += len(frame)
            return DROPPED
        return m.decode(frame)


def may_push(p: Principal, spec: m.TaskSpec) -> bool:
    """As a worker decides: the cluster (the head creating an actor), or a job's process with
    the right to submit, for its own job's tasks or for calls to an actor."""
    if p.role is Role.CLUSTER:
        return True
    if p.kind is not Kind.JOB or p.role < Role.SUBMIT:
        return False
    return spec.actor_id is not None or p.job_id in (0, spec.job_id)


@dataclass(eq=False)
class SimAgent:
    fleet: Fleet
    index: int
    node_id: bytes = field(default_factory=ids.new_node_id)

    def __post_init__(self) -> None:
        self.identity = Identity.of(self.fleet.keys.node_credential(f"sim node {self.index}", self.node_id))
        self.node = SimNode(self.node_id, "", dict(self.fleet.resources), self.fleet.duration)
        self.head: Connection | None = None
        self.server: asyncio.AbstractServer | None = None
        self.reports = ReportSchedule(self.fleet.config.heartbeat_s)
        self._timer: asyncio.TimerHandle | None = None
        self.conns: set[Connection] = set()  # owners' and the head's, to this node's listener
        self.silent = False  # heartbeats stopped: a hung node, seen only by its silence
        self.dead = False
        self.loop = asyncio.get_running_loop()

    async def start(self) -> None:
        limits = self.fleet.limits
        # A gate of its own, as each agent process has: the driver's dials
        # to many nodes are not counted against each other.
        self.server, self.node.address = await serve(
            f"tcp:{self.fleet.host}:0", self.identity, self.handle, on_connect=self.conns.add,
            on_close=self.on_close, limits=limits, gate=Gate(limits),
        )
        self.head = await connect(self.fleet.head_address, self.identity, self.handle, name="head",
                                  on_close=self._head_lost, expect=Role.CLUSTER, limits=limits, timeout=60)
        self.head.decode = self.fleet.views.decoder
        await self.head.request(m.RegisterNode(node=self.node.info()))
        # Real nodes join at different times, so their heartbeats fall at any
        # phase; nodes that joined in one burst would all beat together.
        self.reports.sent(self.loop.time() - self.fleet.rng.uniform(0, self.fleet.config.heartbeat_s))
        self._schedule()

    # -- messages --------------------------------------------------------------

    def handle(self, conn: Connection, msg: Any) -> None:
        if msg is DROPPED:
            return
        t = type(msg)
        if t is m.PushTask:
            if not may_push(conn.principal, msg.spec):
                conn.reply_error(msg, m.ErrorKind.AUTHORIZATION, f"{conn.principal.describe()} may not run this task")
                return
        elif access.refused(self.fleet.refusals, conn, msg):
            return
        elif t is m.ReturnLease:
            owner = self.node.granted.get(msg.lease_id)
            if not isinstance(owner, Connection) or not access.may_return(conn, owner):
                return
        elif t is m.ShutdownCluster:
            conn.reply(msg, m.Ack())
            self.kill()
            return
        self._run(self.node.handle(conn, msg))

    def on_close(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if not self.dead:
            self._run(self.node.owner_gone(conn))

    def _run(self, commands: list[Command]) -> None:
        for c in commands:
            if c is CHANGED:
                if self.reports.changed(self.loop.time()):
                    self._schedule()
            elif type(c) is Reply:
                conn: Connection = c.to
                if c.after > 0:
                    self.loop.call_later(c.after, _reply, conn, c.request, c.msg)
                else:
                    _reply(conn, c.request, c.msg)
            elif type(c) is ReplyError:
                if not c.to.closed:
                    c.to.reply_error(c.request, c.kind, c.message)
            elif type(c) is Send:
                to = self.head if c.to is None else c.to
                if to is not None and not to.closed:
                    to.send(c.msg)

    # -- heartbeats --------------------------------------------------------------

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self.reports.next_at() - self.loop.time())
        self._timer = self.loop.call_later(delay, self._report)

    def _report(self) -> None:
        self._timer = None
        if self.dead or self.silent:
            return
        now = self.loop.time()
        if self.reports.due(now):
            if self.head is not None and not self.head.closed:
                self.head.send(self.node.report())
                self.fleet.reports_sent += 1
            self.reports.sent(now)
        self._schedule()

    # -- failures ----------------------------------------------------------------

    def silence(self) -> None:
        """Stops heartbeats, connections left open: the head sees a hung node only by its silence."""
        self.silent = True

    def kill(self) -> None:
        """As a crashed agent: every connection and the listener go at once."""
        if self.dead:
            return
        self.dead = True
        if self._timer is not None:
            self._timer.cancel()
        if self.server is not None:
            self.server.close()
        for conn in [self.head, *self.conns]:
            if conn is not None:
                conn.abort("simulated node killed", quiet=True)

    def _head_lost(self, conn: Connection) -> None:
        if not self.dead:
            log.warning("sim node %d: the head closed its connection", self.index)
            self.kill()


def _reply(conn: Connection, request: Any, msg: Any) -> None:
    if not conn.closed:
        conn.reply(request, msg)


class Fleet:
    """`count` simulated nodes of `resources` each, joined to the head at `head_address`."""

    def __init__(
        self, *, head_address: str, token: bytes, count: int, resources: dict[str, float],
        duration: float = 0.0, config: Config | None = None, host: str = "127.0.0.1",
    ) -> None:
        self.head_address = head_address
        self.keys = ClusterKeys(token)
        self.count = count
        self.resources = resources
        self.duration = duration
        self.config = config or Config()
        self.limits = Limits.of(self.config)
        self.host = host
        self.refusals = policy.Refusals(log)
        self.views = ViewCount()
        self.rng = random.Random(count)
        self.reports_sent = 0
        self.agents: list[SimAgent] = []

    async def start(self, parallel: int = 8) -> float:
        """Joins every node, `parallel` at a time (the head lets one address have
        only so many handshakes under way: Config.max_unauthenticated_per_peer).
        Returns the seconds it took."""
        started = time.monotonic()
        self.agents = [SimAgent(self, i) for i in range(self.count)]
        gate = asyncio.Semaphore(parallel)

        async def join(agent: SimAgent) -> None:
            async with gate:
                await agent.start()

        await asyncio.gather(*(join(a) for a in self.agents))
        return time.monotonic() - started

    def stats(self) -> dict[str, Any]:
        return {
            "nodes": self.count,
            "alive": sum(not a.dead for a in self.agents),
            "tasks_done": sum(a.node.tasks_done for a in self.agents),
            "leases_granted": sum(len(a.node.granted) for a in self.agents),
            "leases_waiting": sum(len(a.node.pending) for a in self.agents),
            "reports_sent": self.reports_sent,
            "view_frames": self.views.frames,
            "view_bytes": self.views.size,
        }

    async def stop(self) -> None:
        for a in self.agents:
            a.kill()
