"""Objects: put, get and wait, the store, and answering borrowers.

The hot paths of the API live here, each in one call frame from the user's
call (the runtime binds these methods as its own). Small values travel
inline and live in the owner's reference table; larger ones are written
once into the node's shared-memory store and read back as zero-copy views.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime.context import current_task
from manta._private.runtime.errors import error_from_remote
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.serialization import (
    SerializedValue,
    deserialize,
    serialize,
    serialize_checked,
    serialize_error,
)
from manta._private.transport.connection import Connection, ConnectionLost, RemoteError

if TYPE_CHECKING:
    from manta._private.objectstore.region import Region
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.placement_group import PlacementGroup

log = logging.getLogger(__name__)

# Values up to this size travel inside messages; larger ones go to the store.
INLINE_MAX = 100 * 1024
# And at most this much of them inside one task or one task's answer, as in
# Ray (task_rpc_inlined_bytes_limit): past it, the rest go to the store. A
# task of 10,000 arguments of 20 KB each (Ray's envelope) was otherwise one
# 200 MB frame, over max_frame_bytes, and could not be sent at all.
INLINE_TASK_TOTAL = 10 << 20
# How long a worker waits in get() before it lends its CPU to other tasks.
BLOCK_GRACE_S = 0.05
# How many times a reader follows a lost object to its rebuilt copy.
MAX_RELOCATIONS = 8


def inline_budget(max_frame_bytes: int) -> int:
    """What one task (or answer) inlines in all: a quarter of a frame at most,
    so that a cluster run with small frames still sends its tasks."""
    return min(INLINE_TASK_TOTAL, max_frame_bytes // 4)


def inline(size: int, inlined: int, budget: int) -> bool:
    """Whether a value of `size` bytes goes inside the message, after
    `inlined` bytes of the same task's values already did."""
    return size <= INLINE_MAX and inlined + size <= budget


# -- the API's argument errors, worded once for both runtimes ------------------


def put_of_a_ref() -> TypeError:
    return TypeError(
        "Calling put() on an ObjectRef is not allowed; pass the ref itself or put the value it refers to."
    )


def get_of_a_non_ref(refs: Any) -> exc.ObjectRefTypeError:
    return exc.ObjectRefTypeError(f"get() expected an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}")


def negative_timeout() -> ValueError:
    return ValueError("timeout must be non-negative")


def get_timed_out(missing: int, total: int, timeout: float | None) -> exc.GetTimeoutError:
    return exc.GetTimeoutError(f"Get timed out: {missing} of {total} objects not ready after {timeout} s.")


def check_error_of(ref: Any, timeout: float | None) -> None:
    if type(ref) is not ObjectRef:
        raise TypeError(f"error_of() takes an ObjectRef, got {type(ref).__name__}")
    if timeout is not None and timeout < 0:
        raise negative_timeout()


def error_of_timed_out(timeout: float | None) -> exc.GetTimeoutError:
    return exc.GetTimeoutError(f"error_of() timed out: the object was not ready after {timeout} s.")


def wait_of_a_non_list(refs: Any) -> TypeError:
    return TypeError(f"wait() expected a list of ObjectRefs, got {type(refs).__name__}")


def wait_of_duplicates() -> ValueError:
    return ValueError("wait() requires a list of unique ObjectRefs")


def wait_num_returns(num_returns: int, count: int) -> ValueError:
    if num_returns <= 0:
        return ValueError(f"num_returns must be positive, got {num_returns}")
    return ValueError(f"num_returns ({num_returns}) cannot exceed the number of refs ({count})")


def settle(fut: concurrent.futures.Future[Any], read: Callable[[ObjectRef], Any], ref: ObjectRef) -> None:
    """Sets `fut` (unless done) to read(ref), or to what reading it raised."""
    if fut.done():
        return
    try:
        fut.set_result(read(ref))
    except BaseException as e:  # noqa: BLE001 - delivered to the future
        fut.set_exception(e)


def as_raised(error: BaseException) -> BaseException:
    """What get() raises for a stored error: a task's, as its own type too."""
    return error.as_instanceof_cause() if isinstance(error, exc.RayTaskError) else error


def write_value(region: Region, offset: int, sv: SerializedValue) -> None:
    """Writes a serialized value into its extent of the store: a large one with
    several threads (serialization.PARALLEL_COPY_BYTES)."""
    threads = sv.copy_threads()
    if threads > 1:
        region.write_parallel(offset, sv.size, sv.write_range, threads)
        return
    with region.writing(offset, sv.size) as dest:
        sv.write_into(dest)


class Signal:
    """threading.Event's set() and wait() on one bare lock, held while unset.

    A get() that blocks makes one; an Event is a Condition, a lock and a
    list of waiter locks, and making, setting and waiting on one cost ~5 us
    more per sync task than this (cProfile of the sync-task loop)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            pass  # set already

    def wait(self, timeout: float | None = None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self.set()  # it stays set, for whoever waits next
        return True


class Waiter:
    """Counts objects becoming ready; wakes one blocked thread at `needed`,
    or (`fail_fast`, for get) at the first that failed."""

    __slots__ = ("count", "needed", "event", "fail_fast", "__weakref__")

    def __init__(self, needed: int, fail_fast: bool = False) -> None:
        self.count = 0
        self.needed = needed
        self.event = Signal()
        self.fail_fast = fail_fast

    def __call__(self) -> None:
        self.count += 1
        if self.count >= self.needed:
            self.event.set()


class RefStub:
    """Enough of an ObjectRef for `ensure_fetch`, without counting a reference."""

    __slots__ = ("_id", "_owner")

    def __init__(self, oid: bytes, owner: str) -> None:
        self._id = oid
        self._owner = owner


class Objects:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.refs = rt.refs
        self.lock = rt.lock
        # Threads blocked in get()/wait(): woken to raise if the cluster goes.
        self.waiters: weakref.WeakSet[Waiter] = weakref.WeakSet()
        # wait(fetch_local=True): copies being pulled into this node's
        # store, pulls that failed, and the waits to wake when one ends.
        self.local_pulls: set[bytes] = set()
        self.pull_failed: set[bytes] = set()
        self.pull_waiters: set[Callable[[], None]] = set()

    # -- put --------------------------------------------------------------

    serialize_value = staticmethod(serialize_checked)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise put_of_a_ref()
        sv = self.serialize_value(value, f"the object passed to put() ({type(value).__name__})")
        oid = ids.object_id(self.rt.ids.next(), 0)
        self.store_owned(oid, sv, local=1)
        return ObjectRef(oid, self.rt.address, self.rt)

    def store_owned(self, oid: bytes, sv: SerializedValue, local: int) -> None:
        """Records a value this process owns: inline, or written to the store."""
        contained = [(r._id, r._owner) for r in sv.contained]
        if sv.size <= INLINE_MAX:
            data = sv.to_bytes()
            with self.lock:
                self.refs.add_owned(oid, local=local)
                self.refs.set_ready(oid, data, contained=contained)
        else:
            self.write_store(oid, sv)
            self.owned_in_store(oid, contained, local)

    def store_owned_all(self, values: list[tuple[bytes, SerializedValue]]) -> None:
        """Values this process owns, each written to the store whatever its
        size (arguments past what a task inlines), with the agent asked for all
        their space at once rather than one round trip each (a task of 10,000
        arguments, Ray's envelope, spent 5 s of its 13 s waiting on them one
        by one). Those that got space are written and kept; then the first
        refusal (the store is full) is raised."""
        rt = self.rt
        region = rt.region
        assert region is not None
        replies = rt.call_agent_all([m.StoreCreate(object_id=oid, size=sv.size) for oid, sv in values])
        error: BaseException | None = None
        written = []
        for (oid, sv), reply in zip(values, replies):
            if isinstance(reply, BaseException):
                error = error or reply
                continue
            write_value(region, reply.offset, sv)
            written.append(oid)
            self.owned_in_store(oid, [(r._id, r._owner) for r in sv.contained], 0)

        def seal_all() -> None:
            for oid in written:
                rt.send_agent(m.StoreSeal(object_id=oid))

        rt.post(seal_all)
        if error is not None:
            raise error

    def owned_in_store(self, oid: bytes, contained: list[tuple[bytes, str]], local: int) -> None:
        """Records a value this process owns, written to this node's store and sealed."""
        with self.lock:
            self.refs.add_owned(oid, local=local)
            self.refs.set_ready(oid, None, in_store=True, node_id=self.rt.node_id, contained=contained)

    def write_store(self, oid: bytes, sv: SerializedValue) -> None:
        rt = self.rt
        assert rt.region is not None
        reply = rt.call_agent(m.StoreCreate(object_id=oid, size=sv.size))
        write_value(rt.region, reply.offset, sv)
        rt.post(rt.send_agent, m.StoreSeal(object_id=oid))

    def store_unpin(self, object_id: bytes) -> None:
        self.rt.send_agent(m.StoreUnpin(object_ids=[object_id]))

    def _unpinned(self, region: Region, object_id: bytes) -> None:
        region.released()
        self.rt.post(self.store_unpin, object_id)

    def pinned_view(self, object_id: bytes, offset: int, size: int) -> memoryview:
        """A read-only view of stored bytes that unpins the object when it dies.

        numpy keeps the *exporter* of a buffer alive, not the memoryview it was
        handed, so the exporter must be a per-read object: a ctypes array over
        the mapped region. When the last array viewing it is gone, the object
        is unpinned in the store and its bytes may be reused.
        """
        rt = self.rt
        assert rt.region is not None
        region = rt.region
        exporter = region.exporter(offset, size)
        weakref.finalize(exporter, self._unpinned, region, object_id)
        return memoryview(exporter).cast("B").toreadonly()

    # -- get / wait -------------------------------------------------------

    @staticmethod
    def check_refs(refs: Any, what: str) -> list[bytes]:
        """Ids of `refs`, raising TypeError unless every element is an ObjectRef."""
        # One pass that both filters and collects: the cheapest check in Python.
        found = [r._id for r in refs if type(r) is ObjectRef]
        if len(found) != len(refs):
            bad = next(r for r in refs if type(r) is not ObjectRef)
            raise TypeError(
                f"{what} expected an ObjectRef or a list of ObjectRefs, got a list "
                f"containing {type(bad).__name__}"
            )
        return found

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        single = isinstance(refs, ObjectRef)
        if single:
            lst = [refs]
        elif isinstance(refs, (list, tuple)):
            self.check_refs(refs, "get()")
            lst = refs if isinstance(refs, list) else list(refs)
        else:
            raise get_of_a_non_ref(refs)
        if timeout is not None and timeout < 0:
            raise negative_timeout()
        if not self._all_ready(lst):
            flags = self.wait_ready(lst, len(lst), timeout, fail_fast=True)
            if not all(flags):
                # Woken by a failure (as in Ray, get raises it without
                # waiting for the rest), or timed out.
                for r, ok in zip(lst, flags):
                    if ok:
                        e = self.refs.get(r._id)
                        if e is None or e.is_error:
                            self.materialize(r)  # raises its error
                raise get_timed_out(flags.count(False), len(lst), timeout)
        values = self._materialize_all(lst)
        if self.rt.references.unregistered and current_task.get() is None:
            self.rt.references.register_borrows()
        return values[0] if single else values

    def error_of(self, ref: ObjectRef, timeout: float | None) -> BaseException | None:
        """The error `get(ref)` would raise, or None if it would return a
        value, learnt without reading the value (beyond Ray: Ray #52189).
        Errors travel inline, so a large value in a store is never touched."""
        check_error_of(ref, timeout)
        if ref._id in self.refs.pending and not self.wait_ready([ref], 1, timeout)[0]:
            raise error_of_timed_out(timeout)
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                return exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            if not e.is_error:
                return None
            data = e.data
        assert data is not None
        error, _ = deserialize(data)
        return as_raised(error)

    def wait(
        self,
        refs: list[ObjectRef],
        num_returns: int = 1,
        timeout: float | None = None,
        fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
            raise wait_of_a_non_list(refs)
        lst = refs if isinstance(refs, list) else list(refs)
        if not lst:
            return [], []
        # One pass checks types, collects ids and detects duplicates.
        unique = {r._id for r in lst if type(r) is ObjectRef}
        if len(unique) != len(lst):
            self.check_refs(lst, "wait()")  # raises for a non-ObjectRef
            raise wait_of_duplicates()
        if num_returns <= 0 or num_returns > len(lst):
            raise wait_num_returns(num_returns, len(lst))
        if timeout is not None and timeout < 0:
            raise negative_timeout()
        elsewhere = self.refs.elsewhere
        far = fetch_local and bool(elsewhere) and not elsewhere.isdisjoint(unique)
        if not far and self.refs.pending.isdisjoint(unique):
            # Everything is ready already (the common case in a tight loop).
            return lst[:num_returns], lst[num_returns:]
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = self.wait_ready(lst, num_returns, timeout)
        if fetch_local and elsewhere and not elsewhere.isdisjoint(unique):
            flags = self._fetched_here(lst, num_returns, deadline)
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for r, ok in zip(lst, flags):
            if ok and len(ready) < num_returns:
                ready.append(r)
            else:
                not_ready.append(r)
        return ready, not_ready

    def _fetched_here(self, refs: list[ObjectRef], needed: int, deadline: float | None) -> list[bool]:
        """wait(fetch_local=True): a value in another node's store counts as
        ready once a copy is in this node's (Ray's rule). Copies are pulled
        as values become ready; this waits until `needed` are here or the
        deadline passes, woken by each value that becomes ready and by each
        pull that ends. A pull that cannot find room yet goes on after the
        deadline, so a later wait finds it done."""
        me = self.rt.node_id
        wake = threading.Event()

        def poke() -> None:
            wake.set()

        self.pull_waiters.add(poke)
        watched: set[bytes] = set()
        try:
            while True:
                wake.clear()
                far: list[tuple[ObjectRef, bytes]] = []
                here = [False] * len(refs)
                with self.lock:
                    for i, r in enumerate(refs):
                        e = self.refs.get(r._id)
                        if e is None:
                            here[i] = True  # freed: its error shows when read
                        elif not e.state:
                            if r._id not in watched:  # woken when it becomes ready
                                watched.add(r._id)
                                e.waiters = e.waiters or []
                                e.waiters.append(poke)
                        elif not e.in_store or e.local_copy or not e.node_id or e.node_id == me:
                            here[i] = True
                        elif r._id in self.pull_failed:
                            here[i] = True  # its error shows when read
                        else:
                            far.append((r, e.node_id))
                if sum(here) >= needed:
                    return here
                for r, node_id in far:
                    self._pull_here(r, node_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return here
                wake.wait(remaining)
                if self.rt.control_lost:
                    raise exc.RaySystemError(self.rt.control_lost)
        finally:
            self.pull_waiters.discard(poke)

    def _pull_here(self, ref: ObjectRef, node_id: bytes) -> None:
        """Starts (once) copying a stored value into this node's store."""
        oid = ref._id
        with self.lock:
            if oid in self.local_pulls:
                return
            self.local_pulls.add(oid)
        try:
            source = self._agent_address_of(node_id)
        except exc.ObjectLostError:
            self._pulled(oid, None)
            return

        def start() -> None:
            agent = self.rt.agent
            if agent is None:
                self._pulled(oid, None)
            else:
                agent.request_cb(m.StorePull(object_id=oid, source=source), lambda reply: self._pulled(oid, reply))

        self.rt.post(start)

    def _pulled(self, oid: bytes, reply: Any) -> None:
        """A fetch_local pull ended; its copy stays pinned by us while the
        entry lives (`UnpinCopy`), so later reads find it here. A failed one
        counts as here: reading it raises the error."""
        with self.lock:
            self.local_pulls.discard(oid)
            e = self.refs.get(oid)
            keep = type(reply) is m.StorePinned and e is not None and not e.local_copy
            if keep:
                assert e is not None
                e.local_copy = True
            elif type(reply) is not m.StorePinned and e is not None:
                self.pull_failed.add(oid)
                if len(self.pull_failed) > 2 * len(self.refs.entries) + 64:
                    self.pull_failed &= self.refs.entries.keys()  # forget those long released
            waiters = list(self.pull_waiters)
        if type(reply) is m.StorePinned and not keep:
            self.rt.post(self.rt.send_agent, m.StoreUnpin(object_ids=[oid]))
        for poke in waiters:
            poke()

    def wait_ready(
        self, refs: list[ObjectRef], needed: int, timeout: float | None, fail_fast: bool = False,
    ) -> list[bool]:
        """Blocks until `needed` of `refs` are ready (or, if `fail_fast`, one
        failed); returns readiness flags."""
        rt = self.rt
        if rt.control_lost:
            raise exc.RaySystemError(rt.control_lost)
        waiter = Waiter(0, fail_fast)
        failed = False
        self.waiters.add(waiter)
        fetch: list[ObjectRef] = []
        ready = 0
        repeats = 0
        with self.lock:
            seen: set[bytes] = set()
            for r in refs:
                e = self.refs.get(r._id)
                if e is None:
                    ready += 1  # freed/unknown: reported as an error when read
                    continue
                if e.state:
                    ready += 1
                    failed = failed or e.is_error
                elif r._id not in seen:
                    seen.add(r._id)
                    e.waiters = e.waiters or []
                    e.waiters.append(waiter)
                    if not e.owned and not e.fetching:
                        fetch.append(r)
                else:
                    repeats += 1
            waiter.count = ready
            # A pending ref listed twice (get([r, r])) wakes the waiter once.
            waiter.needed = needed - repeats
            if ready >= needed or (fail_fast and failed):
                waiter.event.set()
        for r in fetch:
            rt.post(self.ensure_fetch, r)
        # A short wait keeps the CPU (as Ray's timing effectively does); a
        # longer one lends it back so nested tasks cannot deadlock the node.
        grace = BLOCK_GRACE_S if timeout is None else min(timeout, BLOCK_GRACE_S)
        if not waiter.event.wait(grace):
            remaining = None if timeout is None else max(0.0, timeout - grace)
            blocked = self._notify_blocked()
            try:
                waiter.event.wait(remaining)
            finally:
                if blocked:
                    rt.post(rt.send_agent, m.WorkerUnblocked(worker_id=rt.worker_id))
        self.waiters.discard(waiter)
        if rt.control_lost:
            raise exc.RaySystemError(rt.control_lost)
        with self.lock:
            return [self._is_ready(r._id) for r in refs]

    def wake_all(self) -> None:
        """Nothing blocked in get()/wait() may hang once the cluster is gone."""
        for waiter in list(self.waiters):
            waiter.event.set()

    def _all_ready(self, refs: list[ObjectRef]) -> bool:
        pending = self.refs.pending
        if len(refs) == 1:
            return refs[0]._id not in pending
        return not pending or pending.isdisjoint([r._id for r in refs])

    def _is_ready(self, oid: bytes) -> bool:
        e = self.refs.get(oid)
        return e is None or bool(e.state)

    def _notify_blocked(self) -> bool:
        """A worker running a plain task gives its CPU back while it waits."""
        rt = self.rt
        if rt.is_driver or rt.executor is None:
            return False
        ctx = current_task.get()
        if ctx is None or ctx.actor_id is not None:
            return False
        rt.post(rt.send_agent, m.WorkerBlocked(worker_id=rt.worker_id))
        return True

    def _materialize_all(self, refs: list[ObjectRef]) -> list[Any]:
        # One lock round for the whole list; values are decoded outside it.
        entries = self.refs.entries
        local = self.rt.node_id
        with self.lock:
            snap = []
            here = []
            for r in refs:
                e = entries.get(r._id)
                snap.append(None if e is None else (e.data, e.in_store, e.is_error))
                if e is not None and e.in_store and not e.is_error and (not e.node_id or e.node_id == local):
                    here.append(r._id)
        pinned = self._pin_all(here) if len(here) > 1 else {}
        out = []
        loads = deserialize
        for r, item in zip(refs, snap):
            view = pinned.pop(r._id, None)
            if view is not None:
                value, is_error = loads(view)
                if is_error:
                    raise as_raised(value)
                out.append(value)
            elif item is None or item[1] or item[2]:
                out.append(self.materialize(r))  # stored, failed or freed: the slow path
            else:
                out.append(loads(item[0])[0])  # type: ignore[arg-type]  # inline: data is set
        return out

    def _pin_all(self, oids: list[bytes]) -> dict[bytes, memoryview]:
        """Pins objects of this node's store with one round of requests to the
        agent, all in flight at once, rather than a round trip each: a get of
        10,000 stored objects (Ray's envelope; a task's 10,000 arguments) took
        0.8 ms per object one by one, nearly all of it waiting. Those the agent
        refuses (lost, freed) are left out, for the slow path's answer."""
        if self.rt.agent is None:
            return {}
        views = {}
        for oid, reply in zip(oids, self.rt.call_agent_all([m.StorePin(object_id=o) for o in oids])):
            if not isinstance(reply, BaseException):
                views[oid] = self.pinned_view(oid, reply.offset, reply.size)
        return views

    def materialize(self, ref: ObjectRef) -> Any:
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None:
                raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            data, in_store, is_error, node_id = e.data, e.in_store, e.is_error, e.node_id
        for _ in range(MAX_RELOCATIONS):
            if not in_store:
                break
            try:
                value, is_error = self._read_store(ref._id, node_id)
                break
            except exc.ObjectLostError:
                # The node holding it died: the owner rebuilds it (or says
                # why it cannot), and we read wherever it is now.
                self.rt.recovery.relocate(ref, node_id)
                with self.lock:
                    e = self.refs.get(ref._id)
                    if e is None:
                        raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner) from None
                    data, in_store, is_error, node_id = e.data, e.in_store, e.is_error, e.node_id
        else:
            raise exc.ObjectReconstructionFailedError(
                ref.hex(), ref._owner, f"its copy was lost {MAX_RELOCATIONS} times while being read"
            )
        if not in_store:
            assert data is not None
            value, is_error = deserialize(data)
        if is_error:
            raise as_raised(value)
        return value

    def _read_store(self, oid: bytes, node_id: bytes = b"") -> tuple[Any, bool]:
        rt = self.rt
        if node_id in rt.peers.dead_nodes:
            raise exc.ObjectLostError(oid.hex(), "", f"node {node_id.hex()} died")
        if node_id and node_id != rt.node_id:
            # Stored on another node: our agent copies it here first.
            msg: Any = m.StorePull(object_id=oid, source=self._agent_address_of(node_id))
        else:
            msg = m.StorePin(object_id=oid)
        try:
            reply = rt.call_agent(msg)
        except exc.ObjectLostError as e:
            raise exc.ObjectLostError(oid.hex(), "", str(e)) from None
        return deserialize(self.pinned_view(oid, reply.offset, reply.size))

    def _agent_address_of(self, node_id: bytes) -> str:
        peers = self.rt.peers
        address = peers.node_addresses.get(node_id)
        if address is None:
            peers_info = self.rt.call_head(m.GetClusterInfo())
            self.rt.post(peers.learn_nodes, peers_info.nodes)
            address = {n.node_id: n.address for n in peers_info.nodes}.get(node_id)
            if address is None:
                raise exc.ObjectLostError("", "", f"node {node_id.hex()} is not in the cluster")
        return address

    # -- fetching borrowed values (I/O thread) ------------------------------

    def ensure_fetch(self, ref: ObjectRef | RefStub, lost_node: bytes = b"") -> None:
        """Asks the owner of a borrowed ref for its value."""
        with self.lock:
            e = self.refs.get(ref._id)
            if e is None or e.owned or e.state or e.fetching:
                return
            e.fetching = True
            cap = e.cap
        oid, owner = ref._id, ref._owner

        def on_conn(conn: Any) -> None:
            if isinstance(conn, BaseException):
                self.fetched(oid, None, exc.OwnerDiedError(oid.hex(), owner))
                return
            conn.request_cb(
                m.GetObject(object_id=oid, lost_node=lost_node, cap=cap),
                lambda r: self.fetched(oid, r, None),
            )

        self.rt.peers.with_peer(owner, on_conn)

    def fetched(self, oid: bytes, reply: Any, error: BaseException | None) -> None:
        if isinstance(reply, RemoteError):
            error = error_from_remote(reply)
            if isinstance(error, exc.ObjectLostError):
                error = type(error)(oid.hex())
        elif isinstance(reply, ConnectionLost):
            with self.lock:
                e = self.refs.get(oid)
                owner = e.owner if e is not None else ""
            error = exc.OwnerDiedError(oid.hex(), owner)
        if error is not None:
            self.set_ready(oid, serialize_error(error).to_bytes(), is_error=True)
        else:
            self.set_ready(
                oid, reply.data, in_store=reply.in_store, node_id=reply.node_id, is_error=reply.is_error,
            )

    def set_ready(self, oid: bytes, data: bytes | None, **kw: Any) -> None:
        with self.lock:
            waiters, cmds = self.refs.set_ready(oid, data, **kw)
        failed = kw.get("is_error", False)
        for w in waiters:
            try:
                w()
                if failed and type(w) is Waiter and w.fail_fast:
                    w.event.set()
            except Exception:
                log.exception("waiter failed")
        if cmds:
            self.rt.references.run_commands(cmds)

    # -- futures ----------------------------------------------------------

    def future_for(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        complete = partial(settle, fut, self.materialize, ref)

        def on_ready() -> None:
            # Reading from the store needs the I/O thread: never block it.
            threading.Thread(target=complete, daemon=True).start() if self._needs_io(ref) else complete()

        with self.lock:
            pending = self.refs.add_waiter(ref._id, on_ready)
            e = self.refs.get(ref._id)
            need_fetch = pending and e is not None and not e.owned
        if need_fetch:
            self.rt.post(self.ensure_fetch, ref)
        if not pending:
            on_ready()
        return fut

    def _needs_io(self, ref: ObjectRef) -> bool:
        e = self.refs.get(ref._id)
        return e is not None and e.in_store

    async def await_ref(self, ref: ObjectRef) -> Any:
        return await asyncio.wrap_future(self.future_for(ref))

    def placement_group_ready(self, pg: PlacementGroup) -> ObjectRef:
        """An owned ref set once the head reports the group created (or removed)."""
        return self.ready_when_placed(pg.id.binary(), serialize(pg).to_bytes())

    def ready_when_placed(self, pg_id: bytes, value: bytes) -> ObjectRef:
        """An owned ref set to `value` (a group, serialized) once the head
        reports the group `pg_id` created, or to the error if it is removed."""
        rt = self.rt
        oid = ids.object_id(rt.ids.next(), 0)
        with self.lock:
            self.refs.add_owned(oid)

        def on_state(reply: Any) -> None:
            if isinstance(reply, BaseException):
                err: BaseException = error_from_remote(reply) if isinstance(reply, RemoteError) else reply
            elif reply.state is m.PGStatus.CREATED:
                self.set_ready(oid, value)
                return
            else:
                err = exc.TaskPlacementGroupRemoved(f"placement group {pg_id.hex()} was removed: {reply.error}")
            self.set_ready(oid, serialize_error(err).to_bytes(), is_error=True)

        rt.post(rt.ask_head, m.WaitPlacementGroup(pg_id=pg_id), on_state)
        return ObjectRef(oid, rt.address, rt)

    # -- answering borrowers (I/O thread) -----------------------------------

    def serve_get(self, conn: Connection, msg: m.GetObject) -> None:
        oid = msg.object_id
        rt = self.rt

        def answer() -> None:
            with self.lock:
                e = self.refs.get(oid)
                if e is None:
                    conn.reply_error(msg, m.ErrorKind.FREED, oid.hex())
                    return
                conn.reply(
                    msg,
                    m.ObjectValue(
                        object_id=oid, data=e.data, in_store=e.in_store, is_error=e.is_error, node_id=e.node_id,
                    ),
                )

        def on_ready() -> None:
            if rt.io.on_loop():
                answer()
            else:
                rt.post(answer)

        if msg.lost_node:
            rt.recovery.recover(oid, msg.lost_node)
        with self.lock:
            e = self.refs.get(oid)
            if e is None:
                conn.reply_error(msg, m.ErrorKind.FREED, oid.hex())
                return
            pending = self.refs.add_waiter(oid, on_ready)
        if not pending:
            answer()
