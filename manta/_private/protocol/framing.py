"""Length-prefixed frames, without I/O.

A frame is a 4-byte little-endian payload length followed by the payload.
`FrameDecoder` is fed whatever bytes arrived and hands back whole payloads;
the caller decides what to do with them. Oversized frames raise
`FrameTooLarge` so the connection can be closed with a reason instead of
buffering without bound. Memory follows the bytes that arrived, not what a
header claims: only a frame of at most `PREALLOC` bytes gets its whole
buffer up front (an object chunk, 4 MiB); a larger one grows as it comes.
"""

from __future__ import annotations

import struct
import sys

HEADER = struct.Struct("<I")
HEADER_SIZE = HEADER.size


class FrameTooLarge(Exception):
    """A peer announced a frame larger than this side accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frames.

    Frames are cut from one growing buffer: slicing per message is far
    cheaper than one `readexactly` call per message (measured 2.5x). A large
    frame (an object chunk) that arrives over many reads is gathered into a
    buffer of its own size instead, and handed over as it is: no extra copy.
    """

    __slots__ = ("_buf", "_pos", "max_frame", "_big", "_filled", "_size", "_spares", "_scratch", "_into_big")

    # Frames at least this large, not yet whole, get a buffer of their own.
    BIG = 256 * 1024
    # Kept for reuse: a few chunk-sized buffers, not a one-off huge frame.
    SPARES = 4
    SPARE_MAX = 8 << 20
    # Frames up to this size get their whole buffer when their header comes;
    # larger ones grow with what arrives, so a lying header costs nothing.
    PREALLOC = SPARE_MAX
    # What `buffer()` offers when no large frame is being gathered.
    SCRATCH = 256 * 1024

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame = max_frame
        self._big: bytearray | None = None
        self._filled = 0
        self._size = 0  # the frame being gathered into _big: its length
        # Large-frame buffers handed out before, kept for reuse: writing into
        # fresh memory costs a page fault per 4 KiB, more than the copy.
        self._spares: list[bytearray] = []
        self._scratch: bytearray | None = None
        self._into_big = False

    def buffer(self) -> memoryview:
        """Where the next bytes of the stream should be written, for a reader
        that can fill memory itself (the TLS layer decrypts into it); then
        `filled(n)`. The rest of a large frame being gathered is its own
        buffer, so its bytes land where the frame is handed over from."""
        big = self._big
        self._into_big = big is not None and len(big) == self._size
        if self._into_big:
            assert big is not None
            return memoryview(big)[self._filled :]
        if self._scratch is None:
            self._scratch = bytearray(self.SCRATCH)
        return memoryview(self._scratch)

    def filled(self, n: int) -> list[bytes | bytearray]:
        """`n` bytes were written at the start of the last `buffer()`."""
        if not self._into_big:
            assert self._scratch is not None
            return self.feed(memoryview(self._scratch)[:n])
        big = self._big
        assert big is not None
        self._filled += n
        if self._filled < self._size:
            return []
        self._big = None
        self._keep(big)
        return [big]

    def _keep(self, big: bytearray) -> None:
        if len(big) <= self.SPARE_MAX:
            self._spares.append(big)
            if len(self._spares) > self.SPARES:
                del self._spares[0]

    def feed(self, data: bytes | memoryview) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        view = memoryview(data)
        if self._big is not None:
            big = self._big
            need = self._size - self._filled
            take = min(need, len(view))
            if len(big) == self._size:
                big[self._filled : self._filled + take] = view[:take]
            else:
                big += view[:take]  # growing: it holds only what arrived
            self._filled += take
            if take < need:
                return frames
            frames.append(big)
            self._big = None
            self._keep(big)
            view = view[take:]
            if not view:
                return frames
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        buf += view
        pos = 0
        end = len(buf)
        limit = self.max_frame
        while end - pos >= HEADER_SIZE:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > limit:
                raise FrameTooLarge(size, limit)
            start = pos + HEADER_SIZE
            if end - start < size:
                if size >= self.BIG:
                    # Gather the rest straight into the frame's own buffer.
                    have = end - start
                    if size <= self.PREALLOC:
                        big = self._buffer(size)
                        big[:have] = buf[start:end]
                    else:
                        big = bytearray(buf[start:end])
                    self._big, self._filled, self._size = big, have, size
                    pos = end
                break
            frames.append(bytes(buf[start : start + size]))
            pos = start + size
        self._pos = pos
        return frames

    def _buffer(self, size: int) -> bytearray:
        """A buffer of `size` bytes: a spare nobody uses any more, or a new one."""
        spares = self._spares
        for i in range(len(spares)):
            # Two references: the list's and getrefcount's argument. Anything
            # more (a message, a view into it) means it is still in use.
            if len(spares[i]) == size and sys.getrefcount(spares[i]) == 2:
                return spares.pop(i)
        return bytearray(size)

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos + (self._filled if self._big is not None else 0)
