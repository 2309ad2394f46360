"""The node agent's table of stored objects, without I/O.

An object is created (space allocated), written by its creator through its
own mapping, then sealed; only sealed objects can be pinned for reading.
It is released when its owner frees it *and* no reader still pins it: a
numpy view handed to user code keeps its bytes in place even after every
ObjectRef is gone. Pins are counted per client, so a client that dies
releases everything it held.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from manta._private.objectstore.allocator import Allocator, OutOfSpace


class StoreError(Exception):
    """The store cannot hold an object (the requester sees ObjectStoreFullError)."""


class ObjectExists(StoreError):
    """An object was created twice: a bug of the creator."""


class StoreFull(StoreError):
    """No room now; spilling unpinned objects to disk may make some."""


@dataclass(eq=False, slots=True)
class StoredObject:
    offset: int
    size: int
    creator: Hashable
    sealed: bool = False
    freed: bool = False
    pins: int = 0
    seal_waiters: list[Callable[[StoredObject | None], None]] = field(default_factory=list)


class StoreTable:
    def __init__(self, capacity: int) -> None:
        self.allocator = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}
        self.client_pins: dict[Hashable, collections.Counter[bytes]] = {}
        # Copies of other nodes' objects, least recently used first. They stay
        # after their readers are done (a second reader on this node needs no
        # second transfer) until space is needed.
        self.copies: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        # Objects moved to disk to make room: id -> size.
        self.spilled: dict[bytes, int] = {}
        # Called with an object's id once it has left the node wholly (not
        # when it moves to disk): what node quotas release its bytes on.
        self.on_gone: Callable[[bytes], None] = _nothing

    @property
    def capacity(self) -> int:
        return self.allocator.capacity

    @property
    def used(self) -> int:
        return self.allocator.used

    def create(self, object_id: bytes, size: int, creator: Hashable) -> int:
        if object_id in self.objects:
            raise ObjectExists(f"object {object_id.hex()} already exists in the store")
        if not self.allocator.can_ever_fit(size):
            raise StoreError(
                f"object of {size} bytes is larger than the object store "
                f"({self.allocator.capacity} bytes); start manta with a larger "
                f"object_store_memory"
            )
        while True:
            try:
                offset = self.allocator.allocate(size)
                break
            except OutOfSpace as e:
                if not self._evict_one_copy():
                    raise StoreFull(
                        f"object store is full: cannot store {size} bytes (capacity "
                        f"{e.capacity}, in use {e.used}, largest free block {e.largest_free})"
                    ) from None
        self.objects[object_id] = StoredObject(offset, size, creator)
        return offset

    # -- spilling: the agent writes the bytes, the table keeps the books ----

    def spill_victim(self) -> tuple[bytes, StoredObject] | None:
        """The oldest sealed object nobody is reading, that its owner still holds."""
        for oid, obj in self.objects.items():
            if obj.sealed and not obj.freed and obj.pins <= 0 and oid not in self.copies:
                return oid, obj
        return None

    def spilled_out(self, object_id: bytes) -> None:
        obj = self.objects.pop(object_id)
        self.allocator.free(obj.offset)
        self.spilled[object_id] = obj.size

    def restored(self, object_id: bytes) -> None:
        """Bytes written back at the object's new offset: readable again."""
        self.spilled.pop(object_id, None)
        obj = self.objects[object_id]
        obj.sealed = True

    def restore_failed(self, object_id: bytes) -> None:
        """Its file could not be read back: the object is gone from this node
        (the space made for it is freed; readers are told it is lost)."""
        self.spilled.pop(object_id, None)
        obj = self.objects.pop(object_id, None)
        if obj is not None:
            self.copies.pop(object_id, None)
            self.allocator.free(obj.offset)
        self.on_gone(object_id)

    def mark_copy(self, object_id: bytes) -> None:
        """The object is a copy pulled from another node: evictable when unpinned."""
        if object_id in self.objects:
            self.copies[object_id] = None

    def _evict_one_copy(self) -> bool:
        for oid in self.copies:  # least recently used first
            obj = self.objects.get(oid)
            if obj is not None and obj.pins <= 0 and obj.sealed:
                obj.freed = True
                self._maybe_release(oid, obj)
                return True
        return False

    def seal(self, object_id: bytes) -> list[Callable[[StoredObject | None], None]]:
        obj = self.objects.get(object_id)
        if obj is None or obj.sealed:
            return []
        obj.sealed = True
        waiters, obj.seal_waiters = obj.seal_waiters, []
        return waiters

    def pin(
        self, object_id: bytes, client: Hashable, on_sealed: Callable[[StoredObject | None], None]
    ) -> StoredObject | None:
        """Pins for `client`; returns the object, or None after arranging `on_sealed`.

        `on_sealed(None)` is called if the object is not (or no longer) stored.
        """
        obj = self.objects.get(object_id)
        if obj is None or obj.freed and obj.pins == 0:
            on_sealed(None)
            return None
        obj.pins += 1
        self.client_pins.setdefault(client, collections.Counter())[object_id] += 1
        if object_id in self.copies:
            self.copies.move_to_end(object_id)
        if obj.sealed:
            return obj
        obj.seal_waiters.append(on_sealed)
        return None

    def unpin(self, object_id: bytes, client: Hashable) -> None:
        pins = self.client_pins.get(client)
        if not pins or pins[object_id] <= 0:
            return
        pins[object_id] -= 1
        if pins[object_id] == 0:
            del pins[object_id]
        obj = self.objects.get(object_id)
        if obj is not None:
            obj.pins -= 1
            self._maybe_release(object_id, obj)

    def free(self, object_id: bytes) -> bool:
        """The owner is done with it; True if it was on disk (delete the file)."""
        if self.spilled.pop(object_id, None) is not None:
            self.on_gone(object_id)
            return True
        obj = self.objects.get(object_id)
        if obj is None:
            return False
        obj.freed = True
        self._maybe_release(object_id, obj)
        return False

    def client_gone(self, client: Hashable) -> list[Callable[[StoredObject | None], None]]:
        pins = self.client_pins.pop(client, None)
        if pins:
            for oid, n in pins.items():
                obj = self.objects.get(oid)
                if obj is not None:
                    obj.pins -= n
                    self._maybe_release(oid, obj)
        waiters: list[Callable[[StoredObject | None], None]] = []
        # Objects the client created but never sealed can never be read.
        for oid, obj in list(self.objects.items()):
            if obj.creator == client and not obj.sealed:
                waiters += obj.seal_waiters
                obj.seal_waiters = []
                obj.freed = True
                obj.pins = 0
                self._maybe_release(oid, obj)
        return waiters

    def validate(self) -> None:
        self.allocator.validate()
        assert self.allocator.used >= sum(o.size for o in self.objects.values()), "objects larger than their blocks"
        pins: collections.Counter[bytes] = collections.Counter()
        for counts in self.client_pins.values():
            for oid, n in counts.items():
                assert n > 0, f"{oid.hex()}: a zero pin kept"
                pins[oid] += n
        for oid, obj in self.objects.items():
            assert obj.pins >= pins[oid], f"{oid.hex()}: {obj.pins} pins, clients hold {pins[oid]}"
            assert not (obj.freed and obj.pins <= 0), f"{oid.hex()}: freed and unpinned but kept"
            assert not (obj.sealed and obj.seal_waiters), f"{oid.hex()}: sealed with readers still waiting"
        assert set(self.copies) <= set(self.objects), "a copy that is not stored"
        assert not set(self.spilled) & set(self.objects), "an object both on disk and in memory"

    def _maybe_release(self, object_id: bytes, obj: StoredObject) -> None:
        if obj.freed and obj.pins <= 0:
            del self.objects[object_id]
            self.copies.pop(object_id, None)
            self.allocator.free(obj.offset)
            self.on_gone(object_id)


def _nothing(object_id: bytes) -> None:
    pass
