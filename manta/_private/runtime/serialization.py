"""User values <-> bytes: cloudpickle with pickle protocol 5 out-of-band buffers.

Layout of a serialized value (inline in a message or in the store):

    header   magic, flags, buffer count, pickle length, (offset, length) per buffer
    pickle   the pickle stream
    buffers  each at a 64-byte-aligned offset from the start

Reading from the store hands pickle a memoryview per buffer that points
into shared memory, so numpy arrays come back as zero-copy read-only views.
Object refs met while pickling are collected ("contained refs"): their
owner must keep them alive as long as the containing value lives.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import struct
import threading
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

from manta._private.ids import function_mismatch
from manta._private.objectstore.allocator import ALIGN, align_up
from manta._private.objectstore.region import address_of

MAGIC = 0x4D4E5431  # "MNT1"
_loads = pickle.loads
FLAG_ERROR = 1
_HEAD = struct.Struct("<IIIQ")
_BUF = struct.Struct("<QQ")

# Values of these exact types cannot hide functions from __main__, so the C
# pickler is safe and ~10x cheaper than building a cloudpickle Pickler.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
# A buffer from this size is copied into the store by several threads at
# once (ctypes.memmove releases the GIL). Into fresh store pages the page
# faults cost more than the copy, and they go in parallel: a 1 GiB copy into
# a new memfd ran at 1.36 GB/s on one thread, 2.56 on two and 2.38 on four,
# on this 2-core machine (Ray copies large values with several threads too);
# an 8 GiB put, 0.44 to 0.60 GB/s. Into pages already faulted (an extent
# freed and reused) a put is written by `Region.write_parallel`, whose threads
# each make their own part writable and read-only again: a put of 100 MB went
# from 0.63 to 0.89 of a warm memcpy against the code before, with 100 MB task
# arguments unchanged (benchmarks/microbench.py, 4 rounds, one run). From
# 64 MiB, where a thread's start (~0.1 ms) is nothing beside the copy (7 ms).
PARALLEL_COPY_BYTES = 64 << 20
MAX_COPY_THREADS = 2

_local = threading.local()
_NO_OFFSETS: list[int] = []

# Classes given serializers of their own in this process (Ray's
# util.register_serializer): kept across init() and shutdown(), as in Ray,
# and empty unless a program registers one, so pickling takes no detour.
_custom: dict[type, Callable[[Any], Any]] = {}


def register_serializer(cls: type, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, got {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("register_serializer() needs a callable serializer and deserializer")
    _custom[cls] = lambda obj: (deserializer, (serializer(obj),))


def deregister_serializer(cls: type) -> None:
    _custom.pop(cls, None)


class _CustomPickler(cloudpickle.Pickler):
    # Read when a pickler is made (the C pickler takes it then): a live view,
    # so what is registered later applies too.
    dispatch_table = ChainMap(_custom, cloudpickle.Pickler.dispatch_table)


class SerializedValue:
    __slots__ = ("pickled", "buffers", "contained", "flags", "size", "_offsets")

    def __init__(
        self,
        pickled: bytes,
        buffers: list[memoryview],
        contained: list[Any],
        flags: int = 0,
    ) -> None:
        self.pickled = pickled
        self.buffers = buffers
        self.contained = contained
        self.flags = flags
        if not buffers:  # most values: no out-of-band buffers to lay out
            self._offsets = _NO_OFFSETS
            self.size = _HEAD.size + len(pickled)
            return
        header = _HEAD.size + _BUF.size * len(buffers)
        pos = header + len(pickled)
        offsets = []
        for b in buffers:
            pos = align_up(pos)
            offsets.append(pos)
            pos += b.nbytes
        self._offsets = offsets
        self.size = pos

    def _header(self) -> bytes:
        head = _HEAD.pack(MAGIC, self.flags, len(self.buffers), len(self.pickled))
        if not self.buffers:
            return head
        return head + b"".join(_BUF.pack(o, b.nbytes) for o, b in zip(self._offsets, self.buffers))

    def to_bytes(self) -> bytes:
        if not self.buffers:
            return _HEAD.pack(MAGIC, self.flags, 0, len(self.pickled)) + self.pickled
        out = bytearray(self.size)
        self.write_into(memoryview(out))
        return bytes(out)

    def _parts(self) -> list[tuple[int, memoryview]]:
        """Where each part of the layout goes: the header, the pickle, then
        each out-of-band buffer (as flat bytes)."""
        header = self._header()
        return [(0, memoryview(header)), (len(header), memoryview(self.pickled)),
                *zip(self._offsets, map(_bytes_of, self.buffers))]

    def write_into(self, dest: memoryview) -> None:
        # The whole layout, one thread, by slice assignment: every inline value
        # with buffers comes here (to_bytes), and write_range(dest, 0, size)
        # took twice as long for a small array (6.3 against 3.2 us, timeit).
        header = self._header()
        hlen = len(header)
        dest[:hlen] = header
        dest[hlen : hlen + len(self.pickled)] = self.pickled
        for off, b in zip(self._offsets, self.buffers):
            dest[off : off + b.nbytes] = b

    def copy_threads(self) -> int:
        """How many threads should write this value into the store (see PARALLEL_COPY_BYTES)."""
        if any(b.nbytes >= PARALLEL_COPY_BYTES for b in self.buffers):
            return _copy_threads()
        return 1

    def write_range(self, dest: memoryview, lo: int, hi: int) -> None:
        """Writes bytes [lo, hi) of what `write_into` writes into `dest[lo:hi]`
        (`dest` spans the whole value): one thread's part of a parallel write."""
        to = 0
        for off, part in self._parts():
            a, z = max(lo, off), min(hi, off + part.nbytes)
            if a >= z:
                continue
            if z - a < PARALLEL_COPY_BYTES // 64:
                dest[a:z] = part[a - off : z - off]
            else:  # memmove lets go of the GIL, so the threads copy at once (a slice assignment holds it)
                to = to or address_of(dest)
                ctypes.memmove(to + a, address_of(part) + a - off, z - a)

    def piece(self, start: int, stop: int) -> memoryview:
        """Bytes [start, stop) of what `write_into` writes, without laying it
        all out: a chunk of a large value sent elsewhere (a remote client's
        upload). A piece within one out-of-band buffer is a view of it, no
        copy; one across parts is gathered (the first, holding the pickle)."""
        stop = min(stop, self.size)
        parts = self._parts()
        for off, b in parts[2:]:
            if off <= start and stop <= off + len(b):
                return b[start - off : stop - off]
        out = bytearray(stop - start)
        for off, view in parts:
            lo, hi = max(start, off), min(stop, off + len(view))
            if lo < hi:
                out[lo - start : hi - start] = view[lo - off : hi - off]
        return memoryview(out)


def _copy_threads() -> int:
    return min(MAX_COPY_THREADS, len(os.sched_getaffinity(0)))


def _bytes_of(buf: memoryview) -> memoryview:
    return buf if buf.ndim == 1 and buf.format == "B" else buf.cast("B")


def note_ref(ref: Any) -> bool:
    """Called by ObjectRef.__reduce__: records a ref being serialized.
    False if it is pickled outside manta's serializer (out of band)."""
    refs = getattr(_local, "refs", None)
    if refs is None:
        return False
    refs.append(ref)
    return True


def serialize(value: Any, flags: int = 0) -> SerializedValue:
    if type(value) in _PLAIN:
        return SerializedValue(pickle.dumps(value, 5), [], [], flags)
    buffers: list[pickle.PickleBuffer] = []
    prev = getattr(_local, "refs", None)
    refs: list[Any] = []
    _local.refs = refs
    try:
        if _custom:
            out = io.BytesIO()
            _CustomPickler(out, protocol=5, buffer_callback=buffers.append).dump(value)
            data = out.getvalue()
        else:
            data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    finally:
        _local.refs = prev
    return SerializedValue(data, [b.raw() for b in buffers], refs, flags)


def serialize_checked(value: Any, what: str) -> SerializedValue:
    """serialize(value), or RaySerializationError naming `what` and the part
    of it that could not be pickled."""
    try:
        return serialize(value)
    except Exception as e:
        from manta.exceptions import RaySerializationError

        raise RaySerializationError(f"Could not serialize {what}: {describe_unpicklable(value, e)}") from e


def serialize_error(exc: BaseException) -> SerializedValue:
    try:
        return serialize(exc, FLAG_ERROR)
    except Exception as e:  # an exception that cannot be pickled still reports
        from manta.exceptions import RayError, RayTaskError

        cause = getattr(exc, "cause", None) or exc
        # As in Ray: the error stays a RayTaskError with its traceback; its
        # cause becomes a RayError saying why it could not travel.
        fallback = RayTaskError(
            getattr(exc, "function_name", ""),
            getattr(exc, "traceback_str", "") or f"{type(exc).__name__}: {exc}",
            RayError(
                f"The original cause of the RayTaskError ({type(cause)}) isn't serializable: {e}. "
                "Overwriting the cause to a RayError."
            ),
            getattr(exc, "proctitle", ""), getattr(exc, "pid", 0), getattr(exc, "ip", "127.0.0.1"),
        )
        return serialize(fallback, FLAG_ERROR)


def is_error(data: bytes | memoryview) -> bool:
    _, flags, _, _ = _HEAD.unpack_from(data, 0)
    return bool(flags & FLAG_ERROR)


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}: only plain values are read here")


def plain_value(data: bytes | memoryview) -> Any:
    """A small inline value made of plain types only (numbers, strings,
    bytes, lists, tuples, dicts): no class is looked up, so no code of a
    job's runs. For a process that reads arguments but must never run user
    code (the simulated workers of `sim/`); ValueError for anything else."""
    try:
        magic, flags, nbuf, plen = _HEAD.unpack_from(data, 0)
        if magic != MAGIC or flags or nbuf:
            raise ValueError("not a plain inline value")
        return _NoClasses(io.BytesIO(bytes(data[_HEAD.size : _HEAD.size + plen]))).load()
    except (struct.error, pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError) as e:
        raise ValueError(f"not a plain value: {e}") from None


def deserialize(
    data: bytes | memoryview,
    on_buffer: Callable[[memoryview], memoryview] | None = None,
) -> tuple[Any, bool]:
    """Returns (value, is_error). Buffers are views into `data`, not copies."""
    magic, flags, nbuf, plen = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError("corrupt object: bad magic")
    if not nbuf and plen < 4096 and on_buffer is None:
        # Most values: one small pickle right after the header (slicing copies
        # it, which for a small one is cheaper than making a view).
        return _loads(data[_HEAD.size : _HEAD.size + plen]), bool(flags & FLAG_ERROR)
    view = data if isinstance(data, memoryview) else _aligned(data) if nbuf else memoryview(data)
    pos = _HEAD.size
    bufs = []
    for _ in range(nbuf):
        off, length = _BUF.unpack_from(view, pos)
        pos += _BUF.size
        b = view[off : off + length]
        bufs.append(on_buffer(b) if on_buffer is not None else b)
    pickled = view[pos : pos + plen]
    value = _loads(pickled, buffers=bufs) if bufs else _loads(pickled)
    return value, bool(flags & FLAG_ERROR)


def _aligned(data: bytes) -> memoryview:
    """A read-only copy of an inline value at a 64-byte-aligned address.
    The buffers' offsets are aligned from the value's start, but a bytes
    object's payload starts wherever its header ends; numpy arrays (and the
    code using them) expect the alignment a store read gives."""
    raw = bytearray(len(data) + ALIGN)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % ALIGN
    view = memoryview(raw)[start : start + len(data)]
    view[:] = data
    return view.toreadonly()


def describe_unpicklable(value: Any, err: Exception) -> str:
    """Names the part of `value` that could not be pickled, where it can."""
    culprit = _find_unpicklable(value, depth=0)
    what = f" ({culprit})" if culprit else ""
    return f"{type(err).__name__}: {err}{what}"


def _find_unpicklable(value: Any, depth: int) -> str | None:
    if depth > 3:
        return None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, (list, tuple, set)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        items = [(f".{k}", v) for k, v in vars(value).items()]
    for label, v in items:
        try:
            cloudpickle.dumps(v, protocol=5, buffer_callback=lambda b: None)
        except Exception:
            inner = _find_unpicklable(v, depth + 1)
            return label + (inner or f" of type {type(v).__name__}")
    return None


def load_function(fn_id: bytes, blob: bytes) -> Any:
    """Unpickles a function or class the head sent, only if it is the one
    `fn_id` names: the head checks this on store, and a worker checks it
    again, so a head or storage that was tampered with cannot make it run
    other code under a known function's id."""
    why = function_mismatch(fn_id, blob)
    if why:
        from manta.exceptions import RaySystemError

        raise RaySystemError(f"Refusing to load a function: {why}")
    return pickle.loads(blob)


def dumps_function(fn: Any) -> bytes:
    out = io.BytesIO()
    cloudpickle.dump(fn, out, protocol=5)
    return out.getvalue()
