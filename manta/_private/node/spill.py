"""Spilled objects on disk: encrypted, authenticated, private.

When the store fills, the agent moves objects to files in its spill
directory and reads them back when they are needed. Each file is sealed
with AES-GCM under a key the agent draws at random when it starts and
holds only in its memory (never on disk, in a message or in a child's
environment), so a spill file tells a reader of the disk nothing, and one
that was changed, swapped or cut short fails its check when read back: the
object is then lost on this node, as if the node had died, and its owner
rebuilds it from lineage or reports ObjectLostError.

A file is `MAGIC | prefix (8 bytes) | chunk 0 | ... | chunk n-1`. Chunk i
holds up to CHUNK bytes of the object, encrypted, then its 16-byte tag. Its
nonce is the prefix then i (4 bytes); the prefix counts the files this
agent has written, so no nonce repeats under one key. Its associated data
is the object id, the object's size and i, so no chunk can be moved to
another object, reordered or dropped. Objects are encrypted a chunk at a
time straight from and into the store's memory: no second copy of an
object is ever held.

Files are created 0600 with O_CREAT|O_EXCL|O_NOFOLLOW, relative to a
descriptor of the 0700 spill directory, so a link planted at a spill path,
or in place of the directory, is never followed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from manta._private.config import Config
from manta._private.objectstore.region import Region
from manta._private.objectstore.store import StoredObject, StoreError, StoreTable
from manta._private.private_files import open_private_dir

log = logging.getLogger(__name__)

MAGIC = b"MANTASP1"
HEADER = len(MAGIC) + 8
TAG = 16
# 4 MiB chunks: few enough calls that sealing one while the other is
# written overlaps well (1 MiB ones spend the gain on handing chunks over);
# the tags add 16 bytes per chunk.
CHUNK = 4 << 20


class OutOfDisk(StoreError):
    """The store is full and spilling would fill the disk."""


class SpillCorrupt(Exception):
    """A spill file fails its check (changed, cut short, swapped or gone):
    its object is lost on this node."""


def chunk_count(size: int) -> int:
    """Chunks of an object of `size` bytes (an empty one still has a tag)."""
    return max(1, -(-size // CHUNK))


def file_size(size: int) -> int:
    """The exact length of the spill file of an object of `size` bytes."""
    return HEADER + size + chunk_count(size) * TAG


def chunk_nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def chunk_aad(object_id: bytes, size: int, index: int) -> bytes:
    return object_id + size.to_bytes(8, "big") + index.to_bytes(4, "big")


class SpillFiles:
    """The spill directory's files, sealed under this process's own key."""

    def __init__(self, directory: str, key: bytes | None = None) -> None:
        self.directory = directory
        self._key = key if key is not None else os.urandom(32)  # AES-256-GCM
        self._aead_made: Any = None
        self._written = 0  # nonce prefixes used
        self._dir_fd: int | None = None
        # Two chunk buffers: one is sealed or opened while the other is on
        # disk. Made at the first spill: zero-filled, they were 8 MB of every
        # agent's RSS from start, on nodes that never spill.
        self._chunk_bufs: list[memoryview] = []
        self._pool: ThreadPoolExecutor | None = None

    def _aead(self) -> Any:
        # Made at the first spill, as the buffers are: the cryptography package
        # costs an agent 5 MB of RSS and 14 ms at start, on nodes that never spill.
        if self._aead_made is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead_made = AESGCM(self._key)
        return self._aead_made

    def _bufs(self) -> list[memoryview]:
        if not self._chunk_bufs:
            self._chunk_bufs = [memoryview(bytearray(CHUNK + TAG)) for _ in range(2)]
        return self._chunk_bufs

    def dir_fd(self) -> int:
        """The directory, made 0700 if missing (again, if it was removed);
        raises UnsafePath for a link, or one another user owns or may write."""
        fd = self._dir_fd
        if fd is not None and os.fstat(fd).st_nlink > 0:
            return fd
        if fd is not None:
            os.close(fd)
            self._dir_fd = None
        self._dir_fd = open_private_dir(self.directory, "spill directory")
        return self._dir_fd

    def write(self, object_id: bytes, data: memoryview) -> None:
        """Writes `data` sealed to the object's file; raises OSError."""
        d = self.dir_fd()
        name = object_id.hex()
        fd = _create(name, d)
        self._written += 1
        prefix = self._written.to_bytes(8, "big")
        size = len(data)
        try:
            with open(fd, "wb", buffering=0) as f:
                _write_all(f.write, memoryview(MAGIC + prefix))
                # Chunk i is sealed while chunk i-1 is written (both let go
                # of the GIL): the write of i-1 is done before i+1 reuses its buffer.
                writing: Future[None] | None = None
                bufs = self._bufs()
                for i in range(chunk_count(size)):
                    part = data[i * CHUNK : (i + 1) * CHUNK]
                    out = bufs[i % 2][: len(part) + TAG]
                    self._aead().encrypt_into(chunk_nonce(prefix, i), part, chunk_aad(object_id, size, i), out)
                    if writing is not None:
                        writing.result()
                    writing = self._io().submit(_write_all, f.write, out)
                if writing is not None:
                    writing.result()
        except BaseException:
            self.remove(object_id)
            raise

    def read_into(self, object_id: bytes, out: memoryview) -> None:
        """Fills `out` (the object's size) from its file, checking every
        chunk; raises SpillCorrupt if the file is not the one written."""
        from cryptography.exceptions import InvalidTag  # loaded by the first spill already

        name = object_id.hex()
        size = len(out)
        try:
            # O_NONBLOCK: a FIFO planted at the path must not hang the agent.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.dir_fd())
        except OSError as e:
            raise SpillCorrupt(f"its spill file {self._path(name)} cannot be opened: {e.strerror}") from None
        with open(fd, "rb", buffering=0) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != file_size(size):
                raise SpillCorrupt(
                    f"its spill file {self._path(name)} is {st.st_size} bytes, not the "
                    f"{file_size(size)} written: cut short or changed"
                )
            n = chunk_count(size)
            bufs = self._bufs()

            def sealed(i: int) -> memoryview:
                return bufs[i % 2][: len(out[i * CHUNK : (i + 1) * CHUNK]) + TAG]

            try:
                header = _read_exact(f.readinto, memoryview(bytearray(HEADER)))
                if header[: len(MAGIC)] != MAGIC:
                    raise SpillCorrupt(f"its spill file {self._path(name)} is not a manta spill file")
                prefix = bytes(header[len(MAGIC) :])
                _read_exact(f.readinto, sealed(0))
                for i in range(n):
                    # Chunk i+1 is read while chunk i is checked and decrypted.
                    reading = self._io().submit(_read_exact, f.readinto, sealed(i + 1)) if i + 1 < n else None
                    try:
                        self._aead().decrypt_into(
                            chunk_nonce(prefix, i), sealed(i), chunk_aad(object_id, size, i),
                            out[i * CHUNK : (i + 1) * CHUNK],
                        )
                    finally:
                        if reading is not None:
                            reading.result()
            except InvalidTag:
                raise SpillCorrupt(
                    f"its spill file {self._path(name)} fails authentication: it was changed, "
                    f"or is another object's"
                ) from None
            except OSError as e:
                raise SpillCorrupt(f"its spill file {self._path(name)} cannot be read: {e.strerror}") from None

    def _io(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="spill-io")
        return self._pool

    def remove(self, object_id: bytes) -> None:
        try:
            os.unlink(object_id.hex(), dir_fd=self.dir_fd())
        except OSError:
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)


def _create(name: str, dir_fd: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        # Our books say the object is in memory, so whatever is there is not
        # ours: a stale file or a planted link. Unlinking removes the entry
        # itself, never what a link points to.
        log.warning("removed an unexpected entry at the spill path of %s", name)
        os.unlink(name, dir_fd=dir_fd)
        return os.open(name, flags, 0o600, dir_fd=dir_fd)


def _write_all(write: Callable[[memoryview], int | None], data: memoryview) -> None:
    while data:
        n = write(data)
        data = data[n or 0 :]


def _read_exact(readinto: Callable[[memoryview], int | None], into: memoryview) -> memoryview:
    got = 0
    while got < len(into):
        n = readinto(into[got:])
        if not n:
            raise SpillCorrupt("the spill file ended early")
        got += n
    return into


class Spilling:
    """The agent's spilling: moves objects between the store and their files,
    keeping the store table's books."""

    def __init__(self, store: StoreTable, region: Region, config: Config, directory: str) -> None:
        self.store = store
        self.region = region
        self.config = config
        self.files = SpillFiles(directory)

    @property
    def directory(self) -> str:
        return self.files.directory

    def spill(self, oid: bytes, obj: StoredObject) -> None:
        """Moves one object to disk; raises OutOfDisk if it cannot."""
        try:
            self.files.dir_fd()
            disk = shutil.disk_usage(self.directory)
        except OSError as e:
            raise OutOfDisk(f"object store is full and the spill directory {self.directory} is unusable: {e}") from None
        if disk.used + obj.size > self.config.disk_threshold * disk.total:
            raise OutOfDisk(
                f"object store is full and spilling {obj.size} bytes would fill the disk holding "
                f"{self.directory} past local_fs_capacity_threshold={self.config.disk_threshold:g} "
                f"({disk.used / disk.total:.0%} used of {disk.total / 2**30:.1f} GiB)"
            )
        try:
            self.files.write(oid, self.region.view[obj.offset : obj.offset + obj.size])
        except OSError as e:
            raise OutOfDisk(
                f"object store is full and spilling {obj.size} bytes to {self.directory} failed: {e}"
            ) from None
        self.store.spilled_out(oid)

    def restore(self, oid: bytes, create: Callable[[bytes, int, object], int]) -> None:
        """Reads a spilled object back into the store (`create` makes room).
        A file that fails its check loses the object here: logged once, the
        books dropped, SpillCorrupt raised for the reader."""
        size = self.store.spilled[oid]
        offset = create(oid, size, "restore")
        try:
            self.files.read_into(oid, self.region.view[offset : offset + size])
        except SpillCorrupt as e:
            self.store.restore_failed(oid)
            self.files.remove(oid)
            log.warning("object %s is lost on this node: %s", oid.hex(), e)
            raise SpillCorrupt(f"object {oid.hex()} is lost: {e}") from None
        self.store.restored(oid)
        self.files.remove(oid)
