"""ObjectRef: a handle to an immutable object, counted by its owner."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from manta._private.ids import task_of
from manta._private.runtime import context
from manta._private.runtime.serialization import note_ref

if TYPE_CHECKING:
    from manta._private.runtime.interface import Runtime


class ObjectRef:
    __slots__ = ("_id", "_owner", "_rt", "__weakref__")

    def __init__(self, object_id: bytes, owner: str, rt: Runtime | None) -> None:
        # Constructed by the runtime, which has already counted this instance.
        self._id = object_id
        self._owner = owner
        self._rt = rt

    def __del__(self) -> None:
        rt = self._rt
        if rt is None:
            return
        try:
            rt.ref_deleted(self._id)
        except Exception:  # interpreter shutdown
            pass

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return task_of(self._id)

    def owner_address(self) -> str:
        return self._owner

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self) -> Any:
        rt = self._rt
        if rt is None:
            return (_rebuild_ref, (self._id, self._owner))
        if not note_ref(self):
            rt.ref_escaped(self._id)
        # The owner's proof travels with the ref, so whoever it reaches may read it.
        return (_rebuild_ref, (self._id, self._owner, rt.ref_cap(self._id, self._owner)))

    def __copy__(self) -> ObjectRef:
        return self

    def __deepcopy__(self, memo: Any) -> ObjectRef:
        return self

    def future(self) -> concurrent.futures.Future[Any]:
        rt = self._rt or context.require()
        return rt.future_for(self)

    def __await__(self) -> Generator[Any, None, Any]:
        rt = self._rt or context.require()
        return rt.await_ref(self).__await__()

    def _on_completed(self, callback: Any) -> None:
        """Calls `callback(value)` once the object is ready, or with the
        exception that getting it would raise (Ray's hook for its async API).
        It runs on a runtime thread and is let go of once called."""

        def done(fut: concurrent.futures.Future[Any]) -> None:
            error = fut.exception()
            callback(error if error is not None else fut.result())

        self.future().add_done_callback(done)

    def as_future(self) -> Any:
        import asyncio

        return asyncio.wrap_future(self.future())


_new = object.__new__


def _rebuild_ref(object_id: bytes, owner: str, cap: bytes = b"") -> ObjectRef:
    rt = context._runtime
    if rt is None:
        return ObjectRef(object_id, owner, None)
    # Inlined fast path: an object holding thousands of refs decodes each here.
    with rt.lock:
        e = rt.refs.entries.get(object_id)
        if e is not None and (e.cap or not cap):
            e.local += 1
            ref = _new(ObjectRef)
            ref._id = object_id
            ref._owner = owner
            ref._rt = rt
            return ref
    return rt.deserialized_ref(object_id, owner, cap)
ObjectID = ObjectRef  # Ray's old name, kept as an alias
