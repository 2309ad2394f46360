"""Local mode's objects: put, get and wait over one `ReferenceTable`.

Every object is owned by this process and held inline (serialized, as the
cluster holds small values, so a task sees copies exactly as it would in a
worker). Most objects are ready as soon as their ref exists, since tasks run
at `.remote()`; the others have a `Producer` that makes them ready when
someone needs them: a streaming generator runs on to its end, an async
actor's call deferred from inside an event loop is waited for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.runtime import objects as checks
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.objects import Objects, as_raised, settle
from manta._private.runtime.refs import DropActor, ReferenceTable
from manta._private.runtime.serialization import SerializedValue, deserialize, serialize_checked

if TYPE_CHECKING:
    from manta._private.local.runtime import LocalRuntime


class Producer:
    """What makes a pending object ready: `finish(timeout)` returns once it
    is (or the timeout passed). `background`: it gets ready by itself (an
    async actor's call on the actor's loop), so a future need not drive it."""

    __slots__ = ("finish", "background")

    def __init__(self, finish: Callable[[float | None], None], background: bool) -> None:
        self.finish = finish
        self.background = background


class LocalObjects:
    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt
        self.lock = threading.RLock()
        self.refs = ReferenceTable(rt.address)
        # Pending objects by id, each with what makes it ready.
        self.producers: dict[bytes, Producer] = {}
        # The tracebacks of the exceptions tasks raised, by the id of their
        # error: get() raises with them, so a post-mortem debugger (pdb.pm())
        # lands on the line of the task that failed.
        self.tracebacks: dict[bytes, TracebackType] = {}
        self.closing = False

    # -- making objects -----------------------------------------------------

    def owned_ref(self, oid: bytes) -> ObjectRef:
        """A new object of this process, pending until its value is set."""
        with self.lock:
            self.refs.add_owned(oid)
        return ObjectRef(oid, self.rt.address, self.rt)

    def set_value(self, oid: bytes, sv: SerializedValue) -> None:
        self._set_ready(oid, sv.to_bytes(), False, [(r._id, r._owner) for r in sv.contained])

    def set_error(self, oid: bytes, data: bytes, tb: TracebackType | None = None) -> None:
        if tb is not None:
            self._prune_tracebacks()
            self.tracebacks[oid] = tb
        self._set_ready(oid, data, True, None)

    def _set_ready(self, oid: bytes, data: bytes, is_error: bool, contained: list[tuple[bytes, str]] | None) -> None:
        with self.lock:
            waiters, _ = self.refs.set_ready(oid, data, is_error=is_error, contained=contained)
            self.producers.pop(oid, None)
        for w in waiters:
            w()

    def _prune_tracebacks(self) -> None:
        entries = self.refs.entries
        for oid in [o for o in self.tracebacks if o not in entries]:
            del self.tracebacks[oid]

    # -- ObjectRef's hooks --------------------------------------------------

    def ref_deleted(self, object_id: bytes) -> None:
        if self.closing:
            return
        with self.lock:
            commands = self.refs.remove_local(object_id)
            if object_id in self.tracebacks and object_id not in self.refs.entries:
                del self.tracebacks[object_id]
        self.run_commands(commands)

    def escaped(self, object_id: bytes) -> None:
        with self.lock:
            self.refs.escape(object_id)

    def deserialized_ref(self, object_id: bytes, owner: str, cap: bytes = b"") -> ObjectRef:
        with self.lock:
            self.refs.add_local(object_id, owner)
        return ObjectRef(object_id, owner, self.rt)

    def unpin(self, object_ids: list[bytes]) -> None:
        commands: list[Any] = []
        with self.lock:
            for oid in object_ids:
                commands += self.refs.unpin(oid)
        self.run_commands(commands)

    def run_commands(self, commands: list[Any]) -> None:
        # Nothing is stored elsewhere or borrowed here: the one thing to do
        # is end actors whose last handle went.
        for c in commands:
            if isinstance(c, DropActor):
                self.rt.actors.release(c.actor_id)

    # -- the API ----------------------------------------------------------

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise checks.put_of_a_ref()
        sv = serialize_checked(value, f"the object passed to put() ({type(value).__name__})")
        ref = self.owned_ref(ids.object_id(self.rt.ids.next(), 0))
        self.set_value(ref._id, sv)
        return ref

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        single = isinstance(refs, ObjectRef)
        if single:
            lst = [refs]
        elif isinstance(refs, (list, tuple)):
            Objects.check_refs(refs, "get()")
            lst = list(refs)
        else:
            raise checks.get_of_a_non_ref(refs)
        if timeout is not None and timeout < 0:
            raise checks.negative_timeout()
        flags = self.ready(lst, len(lst), timeout, fail_fast=True)
        if not all(flags):
            for r, ok in zip(lst, flags):
                if ok and self._failed(r._id):
                    self.value(r)  # raises its error, as in the cluster: before the rest are ready
            self._raise_if_lost(lst)
            raise checks.get_timed_out(flags.count(False), len(lst), timeout)
        values = [self.value(r) for r in lst]
        return values[0] if single else values

    def wait(
        self, refs: list[ObjectRef], num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
            raise checks.wait_of_a_non_list(refs)
        lst = list(refs)
        if not lst:
            return [], []
        Objects.check_refs(lst, "wait()")
        if len({r._id for r in lst}) != len(lst):
            raise checks.wait_of_duplicates()
        if num_returns <= 0 or num_returns > len(lst):
            raise checks.wait_num_returns(num_returns, len(lst))
        if timeout is not None and timeout < 0:
            raise checks.negative_timeout()
        flags = self.ready(lst, num_returns, timeout)
        ready = [r for r, ok in zip(lst, flags) if ok][:num_returns]
        chosen = {r._id for r in ready}
        return ready, [r for r in lst if r._id not in chosen]

    def error_of(self, ref: ObjectRef, timeout: float | None) -> BaseException | None:
        checks.check_error_of(ref, timeout)
        if not self.ready([ref], 1, timeout)[0]:
            self._raise_if_lost([ref])
            raise checks.error_of_timed_out(timeout)
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                return exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            if not e.is_error or e.data is None:
                return None
            data = e.data
        return as_raised(deserialize(data)[0])

    def future_for(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        complete = partial(settle, fut, self.value, ref)
        with self.lock:
            pending = self.refs.add_waiter(ref._id, complete)
            producer = self.producers.get(ref._id)
        if not pending:
            complete()
        elif producer is not None and not producer.background:
            producer.finish(None)
        return fut

    async def await_ref(self, ref: ObjectRef) -> Any:
        return await asyncio.wrap_future(self.future_for(ref))

    # -- readiness and values ---------------------------------------------

    def ready(self, refs: list[ObjectRef], needed: int, timeout: float | None, fail_fast: bool = False) -> list[bool]:
        """Makes pending objects among `refs` ready, in order, until `needed`
        are (or, with `fail_fast`, one failed); returns readiness flags."""
        pending = self.refs.pending
        if pending.isdisjoint([r._id for r in refs]):
            return [True] * len(refs)
        deadline = None if timeout is None else time.monotonic() + timeout
        count = sum(1 for r in refs if r._id not in pending)
        if fail_fast and any(self._failed(r._id) for r in refs if r._id not in pending):
            count = -1  # a failure is there already: get raises it without running the rest
        for r in refs:
            if count < 0 or count >= needed:
                break
            with self.lock:
                producer = self.producers.get(r._id) if r._id in pending else None
            if producer is None:
                continue
            producer.finish(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if r._id not in pending:
                count = -1 if fail_fast and self._failed(r._id) else count + 1
        return [r._id not in pending for r in refs]

    def _failed(self, oid: bytes) -> bool:
        e = self.refs.get(oid)
        return e is None or e.is_error

    def _raise_if_lost(self, refs: list[ObjectRef]) -> None:
        """A pending object nothing here will make (a ref from another session): it is lost."""
        for r in refs:
            if r._id in self.refs.pending and r._id not in self.producers:
                raise exc.ObjectLostError(
                    r.hex(), r._owner, "local mode made no such object: the ref comes from another session"
                )

    def value(self, ref: ObjectRef) -> Any:
        """The value of a ready object (a fresh copy), or raises its error."""
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            data, is_error = e.data, e.is_error
            tb = self.tracebacks.get(ref._id) if is_error else None
        assert data is not None
        value, _ = deserialize(data)
        if not is_error:
            return value
        error = as_raised(value)
        raise error.with_traceback(tb) if tb is not None else error

    def clear(self) -> None:
        """At shutdown: refs that outlive the session must not touch it."""
        self.closing = True
        with self.lock:
            self.refs.entries.clear()
            self.refs.pending.clear()
            self.producers.clear()
            self.tracebacks.clear()
