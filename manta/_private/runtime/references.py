"""Reference counting with I/O: ObjectRef hooks, borrowing, and freeing.

The counts themselves live in the sans-IO `ReferenceTable` (guarded by the
runtime's lock); this room turns the commands it returns into messages:
free a stored copy on its node, tell an owner that a borrow ended. Refs
this process received from elsewhere are registered with their owners
before they could be freed, and a borrower whose process dies is dropped
from everything it borrowed.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from manta._private.protocol import messages as m
from manta._private.runtime.holders import Holders
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.refs import DropActor, EndBorrow, FreeStored, UnpinCopy

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime


class References:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.refs = rt.refs
        self.lock = rt.lock
        # Borrowed refs whose owners do not know about us yet.
        self.unregistered: set[bytes] = set()
        self.holders = Holders(self._own_job)

    def _own_job(self) -> int:
        p = self.rt.identity.principal
        return p.job_id if p is not None else 0

    def cap_of(self, object_id: bytes, owner: str) -> bytes:
        """The proof to pass along with a ref: ours if we own it, else the one we were handed."""
        if owner == self.rt.address:
            return self.holders.cap(object_id)
        e = self.refs.entries.get(object_id)
        return e.cap if e is not None else b""

    # -- ObjectRef hooks (any thread) -------------------------------------

    def ref_deleted(self, object_id: bytes) -> None:
        if self.rt.closing:
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
                self.unregistered.discard(object_id)
        if commands:
            self.rt.post(self.run_commands, commands)

    def escaped(self, object_id: bytes) -> None:
        with self.lock:
            self.refs.escape(object_id)

    def deserialized_ref(self, object_id: bytes, owner: str, cap: bytes = b"") -> ObjectRef:
        with self.lock:
            e = self.refs.entries.get(object_id)
            if e is not None:
                e.local += 1
            else:
                e, created = self.refs.add_local(object_id, owner)
                if created:
                    self.unregistered.add(object_id)
            if cap and not e.cap:
                e.cap = cap
        return ObjectRef(object_id, owner, self.rt)

    # -- borrowing --------------------------------------------------------

    def take_unregistered(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """Borrowed refs (id, cap) whose owners do not yet know about us, by owner."""
        out: dict[str, list[tuple[bytes, bytes]]] = {}
        with self.lock:
            for oid in self.unregistered:
                e = self.refs.get(oid)
                if e is not None and not e.owned and not e.registered and e.alive():
                    out.setdefault(e.owner, []).append((oid, e.cap))
                    e.registered = True
            self.unregistered.clear()
        return out

    def register_borrows(self, borrower: str | None = None) -> None:
        """Tells owners about refs this process keeps, before they could be freed (not I/O thread)."""
        pending = self.take_unregistered()
        if pending:
            self.rt.run(self.tell_owners(pending, borrower or self.rt.address))

    async def tell_owners(self, by_owner: dict[str, list[tuple[bytes, bytes]]], borrower: str) -> None:
        """I/O thread: registers `borrower` with each owner of the refs it keeps."""
        futs = []
        for owner, held in by_owner.items():
            try:
                conn = await self.rt.peers.peer(owner)
            except ConnectionError:
                continue  # the owner is gone: its objects with it
            ids = [oid for oid, _ in held]
            futs.append(conn.request(m.AddBorrow(object_ids=ids, borrower=borrower, caps=[c for _, c in held])))
        await asyncio.gather(*futs, return_exceptions=True)

    def add_borrower(self, msg: m.AddBorrow) -> bytes | None:
        """I/O thread: `msg.borrower` keeps these refs; returns the first we no longer know."""
        bad = None
        with self.lock:
            for oid in msg.object_ids:
                if not self.refs.add_borrower(oid, msg.borrower) and bad is None:
                    bad = oid
        if bad is None:
            self.watch_borrower(msg.borrower)
        return bad

    def remove_borrower(self, msg: m.RemoveBorrow) -> None:
        cmds = []
        with self.lock:
            for oid in msg.object_ids:
                cmds += self.refs.remove_borrower(oid, msg.borrower)
        self.run_commands(cmds)

    def watch_borrower(self, address: str) -> None:
        """I/O thread: keeps a connection to a borrower, whose closing tells us it died."""
        if address != self.rt.address:
            self.rt.peers.watch(address)

    def peer_gone(self, address: str) -> None:
        """I/O thread: the process at `address` (or its node) is gone: whatever
        it borrowed from us it holds no longer."""
        with self.lock:
            cmds = self.refs.remove_borrower_everywhere(address)
        self.run_commands(cmds)

    # -- freeing ----------------------------------------------------------

    def unpin(self, object_ids: list[bytes]) -> list[Any]:
        cmds: list[Any] = []
        with self.lock:
            for oid in object_ids:
                cmds += self.refs.unpin(oid)
        return cmds

    def run_commands(self, commands: list[Any]) -> None:
        """I/O thread: frees stored copies and ends borrows, in one message per peer."""
        if not commands:
            return
        rt = self.rt
        frees: dict[bytes, list[bytes]] = {}
        ends: dict[str, list[bytes]] = {}
        unpins: list[bytes] = []
        for c in commands:
            if isinstance(c, EndBorrow):
                ends.setdefault(c.owner, []).append(c.object_id)
            elif isinstance(c, FreeStored):
                frees.setdefault(c.node_id or rt.node_id, []).append(c.object_id)
                # Handled by this same loop, further on.
                commands.extend(rt.recovery.output_freed(c.object_id))
            elif isinstance(c, DropActor):
                rt.actors.release(c.actor_id)
            elif isinstance(c, UnpinCopy):
                unpins.append(c.object_id)
        if unpins and rt.agent is not None:
            rt.agent.send(m.StoreUnpin(object_ids=unpins))
        for node_id, ids in frees.items():
            if node_id in rt.peers.dead_nodes:
                continue  # its store is gone with it
            msg = m.StoreFree(object_ids=ids)
            if node_id == rt.node_id:
                if rt.agent is not None:
                    rt.agent.send(msg)
                continue
            rt.peers.with_node(node_id, partial(_send, msg))
        for owner, ids in ends.items():
            rt.peers.send(owner, m.RemoveBorrow(object_ids=ids, borrower=rt.address))


def _send(msg: Any, conn: Any) -> None:
    conn.send(msg)
