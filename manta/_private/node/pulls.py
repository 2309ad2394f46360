"""The node agent's pulls: copies of objects from other nodes' stores into ours.

A reader on this node asks for an object another node holds (StorePull);
the agent pins it there, takes room here, and reads it in checked chunks
(`transfer.pull_chunks`) straight into this node's shared memory. Readers
of one object share one transfer. The other side, the chunks this node
sends, is `read_chunk`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from manta._private.node.spill import OutOfDisk
from manta._private.node.transfer import checks_for, pull_chunks
from manta._private.objectstore.store import ObjectExists, StoreError, StoreFull
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Role
from manta._private.transport.connection import Connection, connect

if TYPE_CHECKING:
    from manta._private.node.agent import NodeAgent

log = logging.getLogger(__name__)

# How often a pull waiting for room in a full store (spilling off) looks again.
ROOM_POLL_S = 0.05


class ObjectLostError(Exception):
    """An object cannot be read here (its copy, or the node holding it, is gone)."""


def error_kind(e: BaseException) -> m.ErrorKind:
    """What a reader is told about a store failure."""
    if isinstance(e, OutOfDisk):
        return m.ErrorKind.OUT_OF_DISK
    if isinstance(e, ObjectExists):
        return m.ErrorKind.SYSTEM
    if isinstance(e, StoreError):
        return m.ErrorKind.STORE_FULL
    return m.ErrorKind.OBJECT_LOST


def _lost(oid: bytes, why: object) -> ObjectLostError:
    return ObjectLostError(f"{oid.hex()}: {why}")


class Pulls:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.inflight: dict[bytes, asyncio.Task[None]] = {}
        # Who waits for each pull (a pull waiting for room stops when none does).
        self.readers: dict[bytes, list[Connection]] = {}
        # Links to other nodes' agents, by address.
        self.peers: dict[str, Connection] = {}

    def peer_died(self, address: str, why: str) -> None:
        peer = self.peers.pop(address, None)
        if peer is not None:
            peer.abort(why)

    async def pull(self, conn: Connection, msg: m.StorePull) -> None:
        """Copies an object from another node's store into ours, then pins it for `conn`.

        Chunks go straight into our shared memory: no full copy is held in this
        process's heap, and concurrent pulls of one object share one transfer.
        """
        oid = msg.object_id
        readers = self.readers.setdefault(oid, [])
        readers.append(conn)
        try:
            if oid not in self.agent.store.objects:
                pending = self.inflight.get(oid)
                if pending is None:
                    pending = self.inflight[oid] = asyncio.get_running_loop().create_task(
                        self._transfer(oid, msg.source)
                    )
                    pending.add_done_callback(lambda _: self.inflight.pop(oid, None))
                await asyncio.shield(pending)
        except Exception as e:  # noqa: BLE001 - reported to the reader
            conn.reply_error(msg, error_kind(e), str(e if isinstance(e, StoreError) else _lost(oid, e)))
            return
        finally:
            readers.remove(conn)
            if not readers:
                self.readers.pop(oid, None)
        self.agent.pin(conn, m.StorePin(object_id=oid, rid=msg.rid))

    async def _peer(self, source: str) -> Connection:
        peer = self.peers.get(source)
        if peer is None or peer.closed:
            a = self.agent
            peer = await connect(source, a.identity, a.handle, name=source, timeout=10, expect=Role.CLUSTER,
                                 limits=a.limits)
            self.peers[source] = peer
        return peer

    async def _transfer(self, oid: bytes, source: str) -> None:
        a = self.agent
        peer = await self._peer(source)
        info = await peer.request(m.StorePin(object_id=oid))
        started = time.monotonic()
        try:
            if type(info) is not m.StorePinned or info.size < 0:
                raise ObjectLostError(f"{source} answered {info!r} to a pin")
            offset = await self._room(oid, info.size)
            view = a.region.view

            def into(at: int, n: int) -> memoryview:
                return view[offset + at : offset + at + n]

            try:
                sums = checks_for(a.chunk_sums, a.config.transfer_checksums, peer.encrypted)
                retried = await pull_chunks(peer, oid, info.size, into, sums, source, a.state_answers.transfers)
                if retried:
                    log.warning("pulling %s from %s: asked again for %d damaged chunks", oid.hex(), source, retried)
            except BaseException:
                a.store.objects[oid].sealed = True  # let free() release it
                a.store.free(oid)
                raise
            # A copy made for readers: it goes when they unpin it; the owner
            # frees the primary copy on its node.
            a.store.mark_copy(oid)
            for w in a.store.seal(oid):
                w(a.store.objects.get(oid))
            log.info("pulled object %s (%d bytes) from %s in %.3f s",
                     oid.hex(), info.size, source, time.monotonic() - started)
        finally:
            peer.send(m.StoreUnpin(object_ids=[oid]))

    async def _room(self, oid: bytes, size: int) -> int:
        """Space for a pulled copy. Without spilling a full store cannot make
        room itself, so the pull waits (as Ray's pull manager does) until
        objects are freed, while any reader still waits for it."""
        a = self.agent
        while True:
            try:
                return a.create(oid, size, "pull")
            except StoreFull:
                readers = self.readers.get(oid, ())
                if a.config.spilling or size > a.store.capacity or all(c.closed for c in readers):
                    raise
            await asyncio.sleep(ROOM_POLL_S)

    def read_chunk(self, conn: Connection, msg: m.StoreReadChunk) -> None:
        """Another node's pull asks for a chunk of an object it pinned here."""
        a = self.agent
        obj = a.store.objects.get(msg.object_id)
        pins = a.store.client_pins.get(id(conn))
        if (obj is None or not pins or not pins.get(msg.object_id) or msg.offset < 0 or msg.length < 0
                or msg.offset + msg.length > obj.size):
            conn.reply_error(msg, m.ErrorKind.OBJECT_LOST, str(_lost(msg.object_id, "not pinned by the reader")))
            return
        start = obj.offset + msg.offset
        data = a.region.view[start : start + msg.length]
        tag = a.chunk_sums.tag(msg.object_id, msg.offset, data, msg.nonce) if msg.nonce else b""
        a.state_answers.transfers.send(conn, msg.rid, data, tag)
