"""The node's object store region: one memfd, mapped once per process.

The agent creates an anonymous memory file (memfd: shared memory with no
name in /dev/shm, so nothing can be left behind when processes die) and
every process on the node maps it: workers through a descriptor their
fork server was passed, drivers through /proc/<agent pid>/fd/<fd>.
Pages are touched lazily; an idle store costs no memory.
"""

from __future__ import annotations

import mmap
import os


class Region:
    def __init__(self, fd: int, size: int, owns_fd: bool) -> None:
        self.fd = fd
        self.size = size
        self._owns_fd = owns_fd
        self.mmap = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mmap)
        self.readonly = self.view.toreadonly()

    @classmethod
    def create(cls, size: int, name: str = "manta-store") -> Region:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size, owns_fd=True)

    @classmethod
    def inherited(cls, fd: int, size: int) -> Region:
        """The store through a descriptor this process was handed (a worker's, at fork)."""
        return cls(os.dup(fd), size, owns_fd=True)

    @classmethod
    def attach(cls, pid: int, fd: int, size: int) -> Region:
        if pid == os.getpid():
            fd2 = os.dup(fd)
        else:
            fd2 = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        return cls(fd2, size, owns_fd=True)

    def close(self) -> None:
        # Views handed to user code may outlive the runtime; then the mapping
        # stays until they are gone, and the kernel frees it with the process.
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
