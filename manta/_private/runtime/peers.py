"""Connections to other processes (owners, borrowers, workers, other nodes' agents).

One connection per address, dialled on first use and shared; callers that
ask while it is being dialled wait for the same attempt. The pool also
knows which node each address is on, so a node the head declares dead takes
its connections down at once (their requests fail as if the processes had
crashed). I/O thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from manta._private.auth.credentials import Identity
from manta._private.protocol import messages as m
from manta._private.transport.connection import Connection, ConnectionLost, Handler, PeerNodeDied, connect
from manta._private.transport.gate import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

PeerCallback = Callable[[Any], None]  # called with a Connection or a ConnectionLost


class PeerPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        identity: Identity,
        handler: Handler,
        *,
        on_gone: Callable[[str], None],
        ask_nodes: Callable[[PeerCallback], None],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self.loop = loop
        # A driver's changes once it registered its job (`CoreRuntime._register`).
        self.identity = identity
        self.handler = handler
        # Called with the address of a peer whose connection closed.
        self.on_gone = on_gone
        # Asks the head for the cluster's nodes: callback(ClusterInfo or an error).
        self.ask_nodes = ask_nodes
        self.conns: dict[str, Connection] = {}
        self._waiting: dict[str, list[PeerCallback]] = {}
        self.node_addresses: dict[bytes, str] = {}  # node id -> its agent's address
        self.peer_nodes: dict[str, bytes] = {}  # a worker's address -> its node
        self.dead_nodes: set[bytes] = set()
        self.closing = False

    def with_peer(self, address: str, cb: PeerCallback) -> None:
        """Calls cb(connection) or cb(ConnectionLost); connects on first use."""
        conn = self.conns.get(address)
        if conn is not None and not conn.closed:
            cb(conn)
            return
        waiters = self._waiting.get(address)
        if waiters is not None:
            waiters.append(cb)
            return
        self._waiting[address] = [cb]
        self.loop.create_task(self._dial(address))

    async def _dial(self, address: str) -> None:
        result: Connection | BaseException
        try:
            result = await connect(
                address, self.identity, self.handler, on_close=self._closed, timeout=10, limits=self.limits
            )
            self.conns[address] = result
        except Exception as e:  # noqa: BLE001 - any failure means the peer is gone
            result = ConnectionLost(f"cannot reach {address}: {e}")
        for w in self._waiting.pop(address, []):
            try:
                w(result)
            except Exception:
                log.exception("peer callback failed")

    async def peer(self, address: str) -> Connection:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.with_peer(address, fut.set_result)
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    def send(self, address: str, msg: Any) -> None:
        """Sends `msg` to `address` if it can be reached (nothing to answer)."""
        self.with_peer(address, lambda c: c.send(msg) if isinstance(c, Connection) else None)

    def watch(self, address: str) -> None:
        """Keeps a connection to `address`, whose closing tells us it died."""
        self.with_peer(address, _ignore)

    def _closed(self, conn: Connection) -> None:
        for addr, c in list(self.conns.items()):
            if c is conn:
                del self.conns[addr]
                if not self.closing:
                    self.on_gone(addr)

    # -- nodes ------------------------------------------------------------

    def learn_nodes(self, nodes: list[m.NodeInfo]) -> None:
        self.node_addresses.update({n.node_id: n.address for n in nodes})

    def with_node(self, node_id: bytes, cb: Callable[[Connection], None]) -> None:
        """Calls cb with a connection to the agent of `node_id`, if it can be reached."""
        address = self.node_addresses.get(node_id)
        if address is not None:
            self.with_peer(address, lambda c: cb(c) if isinstance(c, Connection) else None)
            return

        def on_info(reply: Any) -> None:
            if isinstance(reply, BaseException):
                return
            self.learn_nodes(reply.nodes)
            if node_id in self.node_addresses:
                self.with_node(node_id, cb)

        self.ask_nodes(on_info)

    def node_died(self, node_id: bytes, reason: str) -> None:
        """Drops every connection into a dead node: its tasks fail over as if
        their workers had crashed (retried elsewhere, within their budgets)."""
        self.dead_nodes.add(node_id)
        err = PeerNodeDied(f"node {node_id.hex()} died: {reason}")
        dead = {a for a, n in self.peer_nodes.items() if n == node_id}
        agent = self.node_addresses.get(node_id)
        if agent is not None:
            dead.add(agent)
        for address in dead:
            conn = self.conns.get(address)
            if conn is not None:
                conn.abort(str(err), err)

    def close(self) -> None:
        self.closing = True
        for c in list(self.conns.values()):
            c.close()


def _ignore(_: Any) -> None:
    pass
