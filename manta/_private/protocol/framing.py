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
from collections.abc import Callable
from typing import Any

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


# What a landing decision sees of a large frame: its first bytes.
HEAD = 64

# (bytes of the frame before its data, where the data goes, what to hand
# over once it is all there), or None: the frame gets a buffer of its own.
Landing = tuple[int, memoryview, Any]
Lander = Callable[[bytes, int], "Landing | None"]


class FrameDecoder:
    """Splits a byte stream into frames.

    Frames are cut from one growing buffer: slicing per message is far
    cheaper than one `readexactly` call per message (measured 2.5x). A large
    frame (an object chunk) that arrives over many reads is gathered into a
    buffer of its own size instead, and handed over as it is: no extra copy.

    With `land` set, a large frame may instead be written where its data
    belongs: `land(first HEAD bytes, frame size)` names the place (an object
    chunk's bytes go straight into the store being pulled into), and what is
    handed over in the frame's stead once it is whole. `divert()` sends the
    rest of the frame being landed nowhere, for a caller that gave up on it.
    """

    __slots__ = ("_buf", "_pos", "max_frame", "_big", "_filled", "_size", "_spares", "_scratch", "_into_big",
                 "land", "_head", "_dest", "_plen", "_landed")

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
        self._size = 0  # the large frame being gathered (or landed): its length
        # Large-frame buffers handed out before, kept for reuse: writing into
        # fresh memory costs a page fault per 4 KiB, more than the copy.
        self._spares: list[bytearray] = []
        self._scratch: bytearray | None = None
        self._into_big = False
        self.land: Lander | None = None
        # A large frame whose first HEAD bytes are still coming, to decide where it lands.
        self._head: bytearray | None = None
        # The large frame being landed: where its data goes, after _plen bytes of prefix.
        self._dest: memoryview | None = None
        self._plen = 0
        self._landed: Any = None

    def buffer(self) -> memoryview:
        """Where the next bytes of the stream should be written, for a reader
        that can fill memory itself (the TLS layer decrypts into it); then
        `filled(n)`. The rest of a large frame being gathered is its own
        buffer (or the place it lands), so its bytes land where the frame is
        handed over from."""
        self._into_big = False
        dest = self._dest
        if dest is not None:
            self._into_big = True
            return dest[self._filled - self._plen :]
        big = self._big
        if big is not None and len(big) == self._size:
            self._into_big = True
            return memoryview(big)[self._filled :]
        if self._scratch is None:
            self._scratch = bytearray(self.SCRATCH)
        if self._head is not None:
            # Only up to HEAD: where the rest goes is decided on those bytes.
            return memoryview(self._scratch)[: HEAD - len(self._head)]
        return memoryview(self._scratch)

    def filled(self, n: int) -> list[Any]:
        """`n` bytes were written at the start of the last `buffer()`."""
        if not self._into_big:
            assert self._scratch is not None
            return self.feed(memoryview(self._scratch)[:n])
        self._filled += n
        if self._filled < self._size:
            return []
        done = self._done()
        return [] if done is None else [done]

    def divert(self) -> None:
        """The frame being landed: the rest of it goes nowhere, and nothing is handed over for it."""
        if self._dest is not None:
            self._dest = memoryview(bytearray(len(self._dest)))
            self._landed = None

    @property
    def landing(self) -> bool:
        return self._dest is not None

    def _done(self) -> Any:
        """The large frame is whole: what stands for it (None: diverted)."""
        if self._dest is not None:
            landed, self._dest, self._landed = self._landed, None, None
            return landed
        big = self._big
        assert big is not None
        self._big = None
        self._keep(big)
        return big

    def _keep(self, big: bytearray) -> None:
        if len(big) <= self.SPARE_MAX:
            self._spares.append(big)
            if len(self._spares) > self.SPARES:
                del self._spares[0]

    def _start(self, first: memoryview, size: int) -> None:
        """A large frame begins with `first` (all that arrived of it, at least HEAD bytes)."""
        landing = self.land(bytes(first[:HEAD]), size) if self.land is not None else None
        have = len(first)
        self._size, self._filled = size, have
        if landing is not None:
            plen, dest, landed = landing
            if plen + len(dest) == size and plen <= HEAD:
                dest[: have - plen] = first[plen:]
                self._dest, self._plen, self._landed = dest, plen, landed
                return
        if size <= self.PREALLOC:
            big = self._buffer(size)
            big[:have] = first
        else:
            big = bytearray(first)  # grows with what arrives
        self._big = big

    def feed(self, data: bytes | memoryview) -> list[Any]:
        frames: list[Any] = []
        view = memoryview(data)
        head = self._head
        if head is not None:
            take = min(HEAD - len(head), len(view))
            head += view[:take]
            view = view[take:]
            if len(head) < HEAD:
                return frames
            self._head = None
            self._start(memoryview(head), self._size)
        if self._dest is not None or self._big is not None:
            need = self._size - self._filled
            take = min(need, len(view))
            if self._dest is not None:
                at = self._filled - self._plen
                self._dest[at : at + take] = view[:take]
            else:
                big = self._big
                assert big is not None
                if len(big) == self._size:
                    big[self._filled : self._filled + take] = view[:take]
                else:
                    big += view[:take]  # growing: it holds only what arrived
            self._filled += take
            if take < need:
                return frames
            done = self._done()
            if done is not None:
                frames.append(done)
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
                    # Gather the rest straight into the frame's own buffer, or where it lands.
                    if self.land is not None and end - start < HEAD:
                        self._head, self._size = bytearray(buf[start:end]), size
                    else:
                        self._start(memoryview(buf)[start:end], size)
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
        gathering = self._big is not None or self._dest is not None
        return len(self._buf) - self._pos + (self._filled if gathering else 0) + len(self._head or b"")
