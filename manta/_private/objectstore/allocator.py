"""First-fit allocator over one shared-memory region, without I/O.

The node agent owns the only instance; processes ask it for space, write
their object at the returned offset in their own mapping of the region,
then seal. Free blocks are kept sorted by offset and merged with their
neighbours on release, so a put/free loop of large objects does not
fragment the region.
"""

from __future__ import annotations

import bisect

# 64-byte alignment keeps numpy views of stored buffers aligned for SIMD.
ALIGN = 64


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) & ~(a - 1)


class OutOfSpace(Exception):
    def __init__(self, requested: int, capacity: int, used: int, largest_free: int) -> None:
        super().__init__(
            f"requested {requested} bytes; store capacity {capacity} bytes, "
            f"{used} in use, largest free block {largest_free} bytes"
        )
        self.requested = requested
        self.capacity = capacity
        self.used = used
        self.largest_free = largest_free


class Allocator:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity - capacity % ALIGN
        self._starts: list[int] = [0]  # free block offsets, sorted
        self._sizes: dict[int, int] = {0: self.capacity}  # free offset -> size
        self._used: dict[int, int] = {}  # allocated offset -> size
        self.used = 0

    def allocate(self, size: int) -> int:
        need = align_up(max(size, 1))
        for i, start in enumerate(self._starts):
            block = self._sizes[start]
            if block >= need:
                del self._sizes[start]
                if block == need:
                    del self._starts[i]
                else:
                    self._starts[i] = start + need
                    self._sizes[start + need] = block - need
                self._used[start] = need
                self.used += need
                return start
        raise OutOfSpace(size, self.capacity, self.used, self.largest_free())

    def free(self, offset: int) -> None:
        size = self._used.pop(offset)
        self.used -= size
        i = bisect.bisect_left(self._starts, offset)
        # Merge with the following free block.
        if i < len(self._starts) and self._starts[i] == offset + size:
            size += self._sizes.pop(self._starts[i])
            del self._starts[i]
        # Merge with the preceding free block.
        if i > 0:
            prev = self._starts[i - 1]
            if prev + self._sizes[prev] == offset:
                self._sizes[prev] += size
                return
        self._starts.insert(i, offset)
        self._sizes[offset] = size

    def largest_free(self) -> int:
        return max(self._sizes.values(), default=0)

    def can_ever_fit(self, size: int) -> bool:
        return align_up(max(size, 1)) <= self.capacity

    def validate(self) -> None:
        """Invariant check for tests: blocks tile the region without overlap."""
        blocks = sorted([(s, z, "free") for s, z in self._sizes.items()] +
                        [(s, z, "used") for s, z in self._used.items()])
        pos = 0
        for start, size, _kind in blocks:
            assert start == pos, f"gap or overlap at {pos}: next block at {start}"
            pos = start + size
        assert pos == self.capacity, f"blocks cover {pos} of {self.capacity}"
        assert self._starts == sorted(self._sizes), "free list out of order"
        for a, b in zip(self._starts, self._starts[1:]):
            assert a + self._sizes[a] < b, f"adjacent free blocks at {a} and {b} not merged"
        assert self.used == sum(self._used.values())
