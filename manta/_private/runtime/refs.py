"""Reference counts and values of the objects one process knows, without I/O.

Every process (driver or worker) keeps one `ReferenceTable`. An entry is
either *owned* (this process created the object with `put` or `.remote()`,
holds its value or location, and decides when it is freed) or *borrowed*
(the process holds a ref owned elsewhere and is registered with that owner
as a borrower).

An entry lives while any of these is non-zero:
- `local`: live `ObjectRef` instances in this process;
- `pins`: in-flight uses (arguments of pending tasks, refs contained in a
  live object, refs travelling in a message);
- `borrowers` (owned entries): other processes registered as borrowers.
When the last one goes, the table returns what must be done about it, as
commands the runtime executes: free the stored copy, tell the owner the
borrow ended, release refs the object contained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PENDING = 0
READY = 1


@dataclass(frozen=True, slots=True)
class FreeStored:
    """Owned object with its primary copy in a node's store: free it there."""

    object_id: bytes
    node_id: bytes = b""


@dataclass(frozen=True, slots=True)
class EndBorrow:
    """This process no longer borrows `object_id`: tell its owner."""

    object_id: bytes
    owner: str


@dataclass(frozen=True, slots=True)
class DropActor:
    """The last hold on an actor this process created is gone (its handles
    here and every process borrowing one): the actor may end."""

    actor_id: bytes


@dataclass(frozen=True, slots=True)
class UnpinCopy:
    """The copy of the value that wait(fetch_local=True) brought into this
    node's store, pinned by this process, may go."""

    object_id: bytes


Command = FreeStored | EndBorrow | DropActor | UnpinCopy


class Entry:
    __slots__ = (
        "owned",
        "owner",
        "local",
        "pins",
        "borrowers",
        "state",
        "data",
        "in_store",
        "node_id",
        "is_error",
        "waiters",
        "contained",
        "registered",
        "fetching",
        "local_copy",
        "cap",
    )

    def __init__(self, owned: bool, owner: str) -> None:
        self.owned = owned
        self.owner = owner
        self.local = 0
        self.pins = 0
        self.borrowers: set[str] | None = None
        self.state = PENDING
        self.data: bytes | None = None
        self.in_store = False
        self.node_id = b""
        self.is_error = False
        self.waiters: list[Callable[[], None]] | None = None
        # A borrowed ref's proof, from its owner, that whoever holds it was handed it.
        self.cap = b""
        # Refs (id, owner) inside this object's value: pinned while it lives.
        self.contained: list[tuple[bytes, str]] = []
        # Borrowed entries: whether the owner knows we borrow it.
        self.registered = False
        # Borrowed entries: a GetObject to the owner is in flight.
        self.fetching = False
        # A copy of the stored value is in this node's store, pinned by this
        # process until the entry goes (wait(fetch_local=True) made it).
        self.local_copy = False

    def alive(self) -> bool:
        return self.local > 0 or self.pins > 0 or bool(self.borrowers)


class ReferenceTable:
    def __init__(self, my_address: str) -> None:
        self.me = my_address
        self.entries: dict[bytes, Entry] = {}
        # Ids of entries not yet READY: lets wait()/get() over many refs test
        # readiness with one C-level set operation instead of a Python loop.
        self.pending: set[bytes] = set()
        # This process's node, and the ids of READY entries whose value is
        # in another node's store: lets wait(fetch_local=True) skip its
        # per-ref look when none are (always, on one node).
        self.here = b""
        self.elsewhere: set[bytes] = set()
        # Owned entries that stand for this process's hold on an actor it
        # created (a valueless ref inside each of its handles, so handles are
        # counted and borrowed as refs are): entry -> actor id.
        self.actor_holds: dict[bytes, bytes] = {}
        # Refs pickled out of band: kept for as long as this process lives.
        self.escaped: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def validate(self) -> None:
        for oid, e in self.entries.items():
            assert e.alive() or e.waiters, f"{oid.hex()} kept with nothing holding it"
            assert (oid in self.pending) == (e.state == PENDING), f"{oid.hex()} pending set out of step"
            assert e.local >= 0 and e.pins >= 0, f"{oid.hex()} negative count"
            assert not e.borrowers or e.owned, f"{oid.hex()} borrowed entry with borrowers"
        assert self.pending <= set(self.entries), "pending ids without entries"
        assert self.elsewhere == {
            oid for oid, e in self.entries.items() if e.state != PENDING and e.in_store and e.node_id != self.here
        }, "elsewhere set out of step"

    def get(self, object_id: bytes) -> Entry | None:
        return self.entries.get(object_id)

    # -- creating entries -------------------------------------------------

    def add_owned(self, object_id: bytes, local: int = 1) -> Entry:
        e = Entry(True, self.me)
        e.local = local
        self.entries[object_id] = e
        self.pending.add(object_id)
        return e

    def add_local(self, object_id: bytes, owner: str) -> tuple[Entry, bool]:
        """A new ObjectRef instance; returns (entry, created_borrowed_entry)."""
        e = self.entries.get(object_id)
        if e is not None:
            e.local += 1
            return e, False
        e = Entry(owner == self.me, owner)
        e.local = 1
        self.entries[object_id] = e
        self.pending.add(object_id)
        return e, not e.owned

    # -- counts -----------------------------------------------------------

    def remove_local(self, object_id: bytes) -> list[Command]:
        e = self.entries.get(object_id)
        if e is None:
            return []
        e.local -= 1
        return self._maybe_release(object_id, e)

    def pin(self, object_id: bytes, owner: str) -> None:
        e = self.entries.get(object_id)
        if e is None:
            e = Entry(owner == self.me, owner)
            self.entries[object_id] = e
            self.pending.add(object_id)
        e.pins += 1

    def unpin(self, object_id: bytes) -> list[Command]:
        e = self.entries.get(object_id)
        if e is None:
            return []
        e.pins -= 1
        return self._maybe_release(object_id, e)

    def escape(self, object_id: bytes) -> None:
        """A ref pickled outside manta's serializer (`cloudpickle.dumps(ref)`)
        may be loaded anywhere, at any time, with nobody counting it: as in
        Ray, its object is then kept as long as this process lives."""
        e = self.entries.get(object_id)
        if e is None or object_id in self.escaped:
            return
        self.escaped.add(object_id)
        e.pins += 1

    def add_borrower(self, object_id: bytes, borrower: str) -> bool:
        e = self.entries.get(object_id)
        if e is None or not e.owned:
            return False
        if e.borrowers is None:
            e.borrowers = set()
        e.borrowers.add(borrower)
        return True

    def remove_borrower(self, object_id: bytes, borrower: str) -> list[Command]:
        e = self.entries.get(object_id)
        if e is None or not e.borrowers:
            return []
        e.borrowers.discard(borrower)
        return self._maybe_release(object_id, e)

    def remove_borrower_everywhere(self, borrower: str) -> list[Command]:
        """A borrower process died: it holds nothing any more."""
        out: list[Command] = []
        for oid, e in list(self.entries.items()):
            if e.borrowers and borrower in e.borrowers:
                e.borrowers.discard(borrower)
                out += self._maybe_release(oid, e)
        return out

    # -- values -----------------------------------------------------------

    def set_ready(
        self,
        object_id: bytes,
        data: bytes | None,
        *,
        in_store: bool = False,
        node_id: bytes = b"",
        is_error: bool = False,
        contained: list[tuple[bytes, str]] | None = None,
    ) -> tuple[list[Callable[[], None]], list[Command]]:
        """Records a value; returns (waiters to wake, commands).

        If nobody holds the ref any more, the value is dropped at once (and a
        stored copy freed), so late results of abandoned tasks do not leak.
        """
        e = self.entries.get(object_id)
        if e is None:
            return [], ([FreeStored(object_id, node_id)] if in_store else [])
        e.state = READY
        self.pending.discard(object_id)
        e.data = data
        e.in_store = in_store
        if in_store and node_id != self.here:
            self.elsewhere.add(object_id)
        else:
            self.elsewhere.discard(object_id)
        e.node_id = node_id
        e.is_error = is_error
        e.fetching = False
        if contained:
            e.contained = list(contained)
            for cid, cowner in contained:
                self.pin(cid, cowner)
        waiters = e.waiters or []
        e.waiters = None
        return waiters, []

    def reset(self, object_id: bytes) -> list[Command]:
        """The value is gone (its copy was lost): the entry waits for a new one.
        Returns what releasing the refs it contained takes."""
        e = self.entries.get(object_id)
        if e is None:
            return []
        out: list[Command] = []
        for cid, _ in e.contained:
            out += self.unpin(cid)
        e.contained = []
        e.state = PENDING
        e.data = None
        e.in_store = False
        self.elsewhere.discard(object_id)
        e.is_error = False
        e.fetching = False
        self.pending.add(object_id)
        return out

    def add_waiter(self, object_id: bytes, waiter: Callable[[], None]) -> bool:
        """Registers `waiter` unless the object is already ready (returns False)."""
        e = self.entries.get(object_id)
        if e is None or e.state == READY:
            return False
        if e.waiters is None:
            e.waiters = []
        e.waiters.append(waiter)
        return True

    # -- release ----------------------------------------------------------

    def _maybe_release(self, object_id: bytes, e: Entry) -> list[Command]:
        if e.alive():
            return []
        del self.entries[object_id]
        self.pending.discard(object_id)
        self.elsewhere.discard(object_id)
        out: list[Command] = []
        if e.local_copy:
            out.append(UnpinCopy(object_id))
        if e.owned:
            if e.in_store:
                out.append(FreeStored(object_id, e.node_id))
            actor_id = self.actor_holds.pop(object_id, None)
            if actor_id is not None:
                out.append(DropActor(actor_id))
        elif e.registered:
            out.append(EndBorrow(object_id, e.owner))
        for cid, _ in e.contained:
            out += self.unpin(cid)
        if e.waiters:
            # Nobody can observe these waiters' objects any more; wake them so
            # they notice the entry is gone.
            for w in e.waiters:
                try:
                    w()
                except Exception:
                    pass
        return out
