"""Reading a log file in chunks for `manta logs`: from an offset, its last
lines, or only one task's lines of a worker's file, noticing a file that
was rotated (replaced: another inode) or truncated since the last read.

Stateless: the reader keeps the offset, inode and task state each chunk
returns and sends them back to read on, which is how `--follow` works
across the head and over any node.
"""

from __future__ import annotations

import collections
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from manta._private.protocol.tool_messages import TASK_MARKER

# A task's lines are looked for in at most this much of the end of its worker's file.
TASK_SCAN_MAX = 64 << 20
_BLOCK = 1 << 16
_MARKER = TASK_MARKER.encode()


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes
    offset: int
    inode: int
    rotated: bool = False
    in_task: bool = False
    more: bool = False


def open_private(path: str) -> int:
    """A descriptor of the regular file at `path`, never through a link: a
    symbolic one (O_NOFOLLOW) or a hard one (a file with another name could
    be any file its maker could link, e.g. a secret of the agent's, offered
    as a worker's log). OSError or ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ValueError(f"{os.path.basename(path)} is not a plain file of its own (a link?): not read")
    return fd


def read_chunk(path: str, *, offset: int = -1, inode: int = 0, tail: int = -1, max_bytes: int = 1 << 20,
               task_id: str = "", in_task: bool = False) -> Chunk:
    fd = open_private(path)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        size, ino = st.st_size, st.st_ino
        rotated = False
        if offset >= 0 and ((inode and ino != inode) or size < offset):
            offset, rotated, in_task = 0, True, False
        first = offset < 0
        if first:
            if task_id:
                offset = _line_after(f, max(0, size - TASK_SCAN_MAX))
            else:
                offset = last_lines_start(f, size, tail) if tail >= 0 else 0
        if not task_id:
            f.seek(offset)
            data = f.read(min(max_bytes, size - offset))
            more = offset + len(data) < size
            if more and b"\n" in data:
                data = data[: data.rindex(b"\n") + 1]  # whole lines while more follows
            return Chunk(data, offset + len(data), ino, rotated, more=more)
        return _task_lines(f, offset, size, ino, rotated, task_id.encode(), in_task,
                           tail if first else -1, max_bytes)


def _task_lines(f: BinaryIO, offset: int, size: int, ino: int, rotated: bool, task: bytes, in_task: bool,
                tail: int, max_bytes: int) -> Chunk:
    """The lines between markers naming `task`, from `offset` to the file's
    last whole line (a marker must be read whole to be understood)."""
    f.seek(offset)
    kept: collections.deque[bytes] | list[bytes] = collections.deque(maxlen=tail) if tail >= 0 else []
    out_bytes = 0
    pos = offset
    rest = b""
    more = False
    while pos < size:
        block = f.read(min(_BLOCK, size - pos))
        if not block:
            break
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            pos += len(line) + 1
            if line.startswith(_MARKER):
                in_task = line[len(_MARKER):].strip() == task
            elif in_task:
                kept.append(line + b"\n")
                out_bytes += len(line) + 1
        if tail < 0 and out_bytes >= max_bytes:
            more = True
            break
    # `pos` is the end of the last whole line read: a partial one is read again next time.
    return Chunk(b"".join(kept), pos, ino, rotated, in_task, more)


def _line_after(f: BinaryIO, start: int) -> int:
    """`start`, or the offset after the first newline at or past it (not mid-line)."""
    if start == 0:
        return 0
    f.seek(start - 1)
    pos = start - 1
    while True:
        block = f.read(_BLOCK)
        if not block:
            return pos
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)


def last_lines_start(f: BinaryIO, size: int, n: int) -> int:
    """Where the last `n` lines of the file begin (a last line without its
    newline counts as one)."""
    if n <= 0 or size == 0:
        return size
    pos = size
    f.seek(size - 1)
    # A newline ending the file ends the last line; it does not start one.
    newlines = -1 if f.read(1) == b"\n" else 0
    while pos > 0:
        start = max(0, pos - _BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        i = len(block)
        while True:
            i = block.rfind(b"\n", 0, i)
            if i < 0:
                break
            newlines += 1
            if newlines == n:
                return start + i + 1
        pos = start
    return 0
