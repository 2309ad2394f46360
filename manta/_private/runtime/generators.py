"""Generator tasks, at both ends: the caller's streams and the worker's flow.

A task or actor method that yields (`num_returns="streaming"`, the default
for generator functions, as in Ray 2.60) sends each item to its caller as it
is yielded: a `GeneratorItem` on the connection the call came in on, before
the call's own answer (the generator's end, object index 1). The caller's
`ObjectRefGenerator` hands out a ref per item in order, blocking until the
next one is there; after the last it raises StopIteration, or first returns
the end's ref once if the task failed, so the error shows at its item.

- Items are owned by the caller, as returns are: kept (pinned) by the
  stream until the generator hands them out, then counted like any ref.
- A retry runs the generator again and skips the items the caller already
  has (`TaskSpec.stream_from`), so nothing is seen twice.
- Backpressure (`_generator_backpressure_num_objects`): the worker pauses
  while that many items wait unconsumed; the caller reports what it took.

`num_returns="dynamic"` runs the generator to its end instead: the items
come back with the answer, and the task's one ref holds a
`DynamicObjectRefGenerator` of them (the submitter builds it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from manta import exceptions as exc
from manta._private.ids import task_of
from manta._private.protocol import messages as m
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.refs import FreeStored
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.interface import Runtime
    from manta._private.runtime.refs import ReferenceTable


_ALL = 1 << 62  # "consumed" that lets any paused generator go on


@dataclass(eq=False)
class Stream:
    """The caller's side of one streaming task (guarded by the runtime lock)."""

    task_id: bytes
    end_id: bytes
    backpressure: int
    items: list[bytes] = field(default_factory=list)  # ids, in yield order
    taken: int = 0  # handed out to the program
    ended: bool = False  # the end's ref is ready: no item comes after
    end_taken: bool = False  # a failed end was handed out, as the last item
    conn: Connection | None = None  # where the items come from


class Streams:
    """The caller's streams, by task id."""

    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.lock = rt.lock
        self.changed = threading.Condition(rt.lock)
        self.streams: dict[bytes, Stream] = {}

    def open(self, task_id: bytes, end_id: bytes, backpressure: int) -> Stream:
        """Before the task is sent: its items may come at once."""
        stream = Stream(task_id, end_id, backpressure)
        with self.lock:
            self.streams[task_id] = stream
            self.rt.refs.add_waiter(end_id, lambda: self._ended(stream))
        return stream

    def generator(self, end: ObjectRef) -> ObjectRefGenerator:
        """The program's generator over the stream `end` finishes."""
        with self.lock:
            stream = self.streams[task_of(end._id)]
        return ObjectRefGenerator(end, self, stream)

    def _ended(self, stream: Stream) -> None:
        with self.lock:
            stream.ended = True
            self.changed.notify_all()

    # -- items arriving (I/O thread) ---------------------------------------

    def on_item(self, conn: Connection, msg: m.GeneratorItem) -> None:
        rt = self.rt
        item = msg.item
        with self.lock:
            stream = self.streams.get(msg.task_id)
            fresh = task_of(item.object_id) == msg.task_id and rt.refs.get(item.object_id) is None
            if stream is not None and fresh and msg.index == len(stream.items):
                rt.refs.add_owned(item.object_id, local=0)
                rt.refs.pin(item.object_id, rt.address)  # the stream's hold, until handed out
                stream.items.append(item.object_id)
                stream.conn = conn
                self.changed.notify_all()
                keep = True
            else:
                keep = False
        if keep:
            rt.tasks.store_return(item)
            return
        # Not wanted: its generator was dropped, or the caller has it from an
        # earlier attempt. A stored copy is freed, and a generator waiting on
        # backpressure is let go on to its end.
        if stream is None:
            conn.send(m.GeneratorConsumed(task_id=msg.task_id, consumed=_ALL))
        if item.in_store and fresh:
            rt.references.run_commands([FreeStored(item.object_id, item.node_id)])

    # -- the program's side (any thread) ------------------------------------

    def next(self, stream: Stream, timeout: float | None) -> ObjectRef | None:
        """The next item's ref; None at the end. Raises GetTimeoutError."""
        rt = self.rt
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                taken = take_next(rt, stream)
                if taken is not None:
                    break
                if rt.control_lost:
                    raise exc.RaySystemError(rt.control_lost)
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise exc.GetTimeoutError("no item of the generator came in time")
                self.changed.wait(1.0 if wait is None else min(wait, 1.0))
            ref, cmds = taken
            if ref is None or ref._id == stream.end_id:
                return ref
            consumed, conn = stream.taken, stream.conn
        if cmds:
            rt.post(rt.references.run_commands, cmds)
        if stream.backpressure > 0 and conn is not None:
            conn.send_threadsafe(m.GeneratorConsumed(task_id=stream.task_id, consumed=consumed))
        return ref

    def ready(self, stream: Stream) -> bool:
        """Whether next() would not block."""
        with self.lock:
            return stream.taken < len(stream.items) or stream.ended

    def close(self, stream: Stream) -> None:
        """The generator is gone: items it never handed out are let go."""
        rt = self.rt
        if rt.closing:
            return
        cmds: list[Any] = []
        with self.lock:
            self.streams.pop(stream.task_id, None)
            for oid in stream.items[stream.taken:]:
                cmds += rt.refs.unpin(oid)
            stream.taken = len(stream.items)
            conn = stream.conn if not stream.ended else None
        if cmds:
            rt.post(rt.references.run_commands, cmds)
        if conn is not None and stream.backpressure > 0:
            # A generator paused for its caller would wait for good.
            conn.send_threadsafe(m.GeneratorConsumed(task_id=stream.task_id, consumed=_ALL))


def take_next(rt: Runtime, stream: Stream) -> tuple[ObjectRef | None, list[Any]] | None:
    """With the runtime's lock held: the stream's next ref and the commands
    unpinning it took, None for the end (the failed end's ref, once, first),
    or None alone if nothing is there yet."""
    refs = cast("ReferenceTable", rt.refs)  # the runtimes that stream (core, local) keep a full table
    if stream.taken < len(stream.items):
        oid = stream.items[stream.taken]
        stream.taken += 1
        e = refs.get(oid)
        if e is not None:
            e.local += 1  # the ObjectRef made here
        return ObjectRef(oid, rt.address, rt), refs.unpin(oid)
    if not stream.ended:
        return None
    end = refs.get(stream.end_id)
    if stream.end_taken or (end is not None and not end.is_error):
        return None, []
    stream.end_taken = True
    if end is not None:
        end.local += 1
    return ObjectRef(stream.end_id, rt.address, rt), []


class ItemSource(Protocol):
    """Where an ObjectRefGenerator's refs come from: the caller's `Streams`
    (items sent by the worker running the task), or local mode's (items
    made by running the generator in this process)."""

    def next(self, stream: Stream, timeout: float | None) -> ObjectRef | None: ...
    def ready(self, stream: Stream) -> bool: ...
    def close(self, stream: Stream) -> None: ...


class ObjectRefGenerator:
    """The refs of a streaming generator task's items, as they are yielded."""

    def __init__(self, end: ObjectRef, streams: ItemSource, stream: Stream) -> None:
        self._end = end
        self._streams = streams
        self._stream = stream

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        ref = self._streams.next(self._stream, None)
        if ref is None:
            raise StopIteration
        return ref

    def next_within(self, timeout_s: float | None) -> ObjectRef | None:
        """The next ref, None at the end; GetTimeoutError if none came in time
        (a remote client's proxy answers its GenNext with it)."""
        return self._streams.next(self._stream, timeout_s)

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef | None:
        """The next ref, or None if none came within `timeout_s` (Ray's)."""
        try:
            ref = self._streams.next(self._stream, timeout_s)
        except exc.GetTimeoutError:
            return None
        if ref is None:
            raise StopIteration
        return ref

    def __aiter__(self) -> AsyncIterator[ObjectRef]:
        return self

    async def __anext__(self) -> ObjectRef:
        # The wait runs on a thread: the event loop keeps going meanwhile.
        ref = await asyncio.get_running_loop().run_in_executor(None, self._streams.next, self._stream, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self) -> ObjectRef:
        """A ref that is ready when the task has finished (and raises its error)."""
        return self._end

    def is_finished(self) -> bool:
        s = self._stream
        return s.ended and s.taken >= len(s.items)

    def next_ready(self) -> bool:
        return self._streams.ready(self._stream)

    def task_id(self) -> bytes:
        return self._stream.task_id

    def _generator_ref(self) -> ObjectRef:
        return self._end

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._stream.task_id.hex()})"

    def __reduce__(self) -> Any:
        raise TypeError("an ObjectRefGenerator cannot be passed to another task or actor; pass its refs")

    def __del__(self) -> None:
        try:
            self._streams.close(self._stream)
        except Exception:  # interpreter shutdown
            pass


class DynamicObjectRefGenerator:
    """What a `num_returns="dynamic"` task's ref holds: its items' refs."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


# -- the worker's side ----------------------------------------------------------


class Flow:
    """One running streaming generator's backpressure, in its worker."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.limit = limit
        self.sent = 0
        self.consumed = 0
        # A dynamic generator's items kept inline for its answer, in bytes (objects.inline).
        self.inlined = 0
        self.cond = threading.Condition()
        self.loop = loop
        self.event = asyncio.Event() if loop is not None else None

    def must_wait(self) -> bool:
        return self.limit > 0 and self.sent - self.consumed >= self.limit

    def took(self, consumed: int) -> None:
        """I/O thread: the caller has taken `consumed` items."""
        with self.cond:
            self.consumed = max(self.consumed, consumed)
            self.cond.notify_all()
        if self.loop is not None and self.event is not None:
            self.loop.call_soon_threadsafe(self.event.set)

    def wait(self, cancelled: Any) -> None:
        """Blocks while too many items wait; returns early if `cancelled()`."""
        with self.cond:
            while self.must_wait() and not cancelled():
                self.cond.wait(0.5)

    async def wait_async(self, cancelled: Any) -> None:
        assert self.event is not None
        while self.must_wait() and not cancelled():
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), 0.5)
            except TimeoutError:
                pass
