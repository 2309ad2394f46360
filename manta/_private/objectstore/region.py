"""The node's object store region: one memfd, mapped once per process.

The agent creates an anonymous memory file (memfd: shared memory with no
name in /dev/shm, so nothing can be left behind when processes die) and
every process on the node maps it: workers through a descriptor their
fork server was passed, drivers through /proc/<agent pid>/fd/<fd>.
Pages are touched lazily; an idle store costs no memory.

Only the agent maps the whole region writable. A driver or worker maps it
read-only, so what it reads (a numpy array over stored bytes, a buffer
cast through ctypes) cannot be written through, by a bug or by user code
poking at memory: the write faults in the writer, and the stored object
is intact. It writes an object it creates by making that object's own
pages writable for the time of the write (`writing`): two mprotect calls
per stored object.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
from collections.abc import Callable, Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_POPULATE_WRITE = 23  # Linux 5.14: fault pages in as if written, their bytes unchanged
# What one prewarm step faults in: small enough to stop soon when asked.
PREWARM_STEP = 32 << 20


def _protect(address: int, length: int, prot: int) -> None:
    if _libc.mprotect(address, length, prot) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect of the store failed: {os.strerror(err)}")


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p),
    ]


def address_of(buffer: object) -> int:
    """The address of a buffer's first byte, read-only buffers included (which
    ctypes' from_buffer refuses): the read-only mapping's base."""
    view = _PyBuffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    if get(buffer, ctypes.byref(view), 0) != 0:  # PyBUF_SIMPLE
        raise BufferError("no buffer")
    try:
        return int(view.buf or 0)
    finally:
        release = ctypes.pythonapi.PyBuffer_Release
        release.argtypes = [ctypes.POINTER(_PyBuffer)]
        release(ctypes.byref(view))


class Region:
    def __init__(self, fd: int, size: int, owns_fd: bool, writable: bool = True) -> None:
        self.fd = fd
        self.size = size
        self._owns_fd = owns_fd
        self.writable = writable
        prot = mmap.PROT_READ | mmap.PROT_WRITE if writable else mmap.PROT_READ
        self.mmap = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
        self.view = memoryview(self.mmap)
        self.readonly = self.view.toreadonly()
        self.base = address_of(self.readonly)
        # Buffers handed out over the mapping that are still alive (see `exporter`).
        self.exported = 0
        self._write_lock = threading.Lock()

    @classmethod
    def create(cls, size: int, name: str = "manta-store") -> Region:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size, owns_fd=True)

    @classmethod
    def inherited(cls, fd: int, size: int, writable: bool = True) -> Region:
        """The store through a descriptor this process was handed (a worker's, at fork)."""
        return cls(os.dup(fd), size, owns_fd=True, writable=writable)

    @classmethod
    def attach(cls, pid: int, fd: int, size: int, writable: bool = True) -> Region:
        if pid == os.getpid():
            fd2 = os.dup(fd)
        else:
            fd2 = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        return cls(fd2, size, owns_fd=True, writable=writable)

    def exporter(self, offset: int, size: int) -> ctypes.Array[ctypes.c_char]:
        """A per-read buffer over stored bytes, whose lifetime the caller tracks
        (`released` when it dies): the mapping stays while any is alive."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"extent {offset}+{size} outside the store of {self.size} bytes")
        self.exported += 1
        return (ctypes.c_char * size).from_address(self.base + offset)

    def released(self) -> None:
        self.exported -= 1

    @contextlib.contextmanager
    def writing(self, offset: int, size: int) -> Iterator[memoryview]:
        """A writable view of the extent [offset, offset+size), for the time of the write.

        In a read-only mapping its pages are made writable (mprotect) and back
        after: the page table stays filled, which a fresh mapping of the extent
        would have to fault in again on every put. One write at a time, so an
        extent's edge page shared with another object is not made read-only
        under another thread's write.
        """
        if offset < 0 or size <= 0 or offset + size > self.size:
            raise ValueError(f"extent {offset}+{size} outside the store of {self.size} bytes")
        if self.writable:
            with self.view[offset : offset + size] as dest:
                yield dest
            return
        start = offset - offset % mmap.PAGESIZE
        length = offset + size - start
        with self._write_lock:
            _protect(self.base + start, length, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                buf = (ctypes.c_char * size).from_address(self.base + offset)
                with memoryview(buf) as raw, raw.cast("B") as dest:
                    yield dest
            finally:
                _protect(self.base + start, length, mmap.PROT_READ)

    def write_parallel(self, offset: int, size: int, fill: Callable[[memoryview, int, int], None], n: int) -> None:
        """Writes the extent [offset, offset+size) with `n` threads: `fill(dest,
        lo, hi)` writes the extent's bytes [lo, hi) into `dest`, a view of the
        whole extent.

        Each thread takes a page-aligned part. In a read-only mapping it makes
        its part writable, fills it and makes it read-only again, so one part's
        mprotect calls overlap another's copy. Protecting the whole extent each
        way was 5.6 ms of a 16 ms put of 100 MB (perf_counter around each call).
        This way a put of 100 MB ran at 0.81 of a warm memcpy, against 0.72 with
        the whole extent protected around a copy by two threads, and 0.61 on
        one thread (one driver alternating the three, 5 rounds of 9 puts).
        """
        if offset < 0 or size <= 0 or offset + size > self.size:
            raise ValueError(f"extent {offset}+{size} outside the store of {self.size} bytes")
        end = offset + size
        first = offset - offset % mmap.PAGESIZE
        pages = -(-(end - first) // mmap.PAGESIZE)
        step = -(-pages // max(1, n)) * mmap.PAGESIZE
        parts = [(a, min(a + step, end)) for a in range(first, end, step)]
        rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
        errors: list[BaseException] = []

        def run(dest: memoryview, a: int, z: int) -> None:
            try:
                if not self.writable:
                    _protect(self.base + a, z - a, rw)
                try:
                    fill(dest, max(a, offset) - offset, z - offset)
                finally:
                    if not self.writable:
                        _protect(self.base + a, z - a, ro)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                errors.append(e)

        # One write at a time, as in `writing`: the extent's edge pages may be
        # another object's too.
        with self._write_lock:
            buf = (ctypes.c_char * size).from_address(self.base + offset)
            with memoryview(buf) as raw, raw.cast("B") as dest:
                threads = [threading.Thread(target=run, args=(dest, a, z), daemon=True) for a, z in parts[1:]]
                for t in threads:
                    t.start()
                run(dest, *parts[0])
                for t in threads:
                    t.join()
        if errors:
            raise errors[0]

    def prewarm(self, length: int, stop: threading.Event) -> int:
        """Faults in the first `length` bytes of the store (the agent's mapping),
        as far as `stop` lets it; returns how many. The allocator hands out the
        lowest free space first, so those pages take the first objects.

        A page's first write costs far more than the copy on this machine (a
        fresh page takes 1.2 GB/s of writes, a touched one 10.5): a pull into
        a store that has held nothing ran at a fifth of one into used space
        (benchmarks/transfer.py). The pages stay in use (they are the
        store's); that is why it is asked for (`store_prewarm_bytes`). ctypes
        lets the GIL go for each step, so the agent's loop runs meanwhile.
        """
        done = 0
        length = min(length, self.size)
        while done < length and not stop.is_set():
            n = min(PREWARM_STEP, length - done)
            if _libc.madvise(self.base + done, n, MADV_POPULATE_WRITE) != 0:
                break  # an older kernel (EINVAL), or no memory for it (ENOMEM): the pages fault in when written
            done += n
        return done

    def close(self) -> None:
        # Views handed to user code may outlive the runtime; then the mapping
        # stays until they are gone, and the kernel frees it with the process.
        if self.exported > 0:
            if self._owns_fd:
                os.close(self.fd)
            return
        try:
            self.readonly.release()
            self.view.release()
            self.mmap.close()
        except BufferError:
            pass
        if self._owns_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass
