"""Object chunks between nodes, each checked against the sender's checksum.

A pull asks the source agent for an object in chunks, a few in flight, and
each chunk comes with a tag its receiver checks before the bytes count. A
chunk that fails is asked for again, a few times; then the transfer fails
as a lost object (the reader's usual recovery takes over).

The tag is a MAC, not a plain checksum: a plain one finds bytes damaged on
the way (a faulty NIC, switch or memory, a bug that misplaces bytes), but
someone on a link without TLS who changes the bytes can recompute it. Each
request carries a fresh random nonce from the receiver; sender and receiver
derive from it, the object's id and the chunk's place a one-time key
(HMAC-SHA256 under a key derived from the cluster secret, which only the
head and the agents hold), and the tag is Poly1305 of the chunk under that
key. Poly1305 hashes 12 GB/s here (HMAC-SHA256 1.7, BLAKE2b 0.66), so
the check runs in the loop; a one-time key is what Poly1305 needs, and what
makes a tag seen once useless for any other request.

A link that runs TLS skips it (`checks_for`): TLS already authenticates
every record with AES-GCM under keys only the two agents hold, so the tag
would check the same bytes against the same kind of forger again. Skipping
it saved 7-8% of each agent's CPU in a TLS pull (perf, Poly1305 in the
`cryptography` module, on both ends; `benchmarks/tls.py`). On a plaintext
link it is the only check, and it costs little
(`benchmarks/cluster_bench.py --checksums`).
`_system_config={"transfer_checksums": False}` turns it off on the
receiving node, for measuring that cost.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any

from manta._private.protocol import messages as m

# 4 MiB frames, four in flight: enough to keep a link busy.
CHUNK = 4 << 20
WINDOW = 4
RETRIES = 2  # asks again for a chunk that failed its check, then gives up
NONCE_SIZE = 16
_WHERE = struct.Struct("<QQ")


class ChunkDamaged(Exception):
    """A chunk failed its check (or its length) as many times as it may."""


class ChunkSums:
    """Tags of chunks under the cluster's transfer key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._poly: Any = None

    def _poly1305(self) -> Any:
        # Loaded at the first tag: the cryptography package costs an agent 5 MB
        # of RSS and 14 ms at start, and a node that pulls nothing needs none.
        if self._poly is None:
            from cryptography.hazmat.primitives.poly1305 import Poly1305

            self._poly = Poly1305
        return self._poly

    def _one_time_key(self, object_id: bytes, offset: int, length: int, nonce: bytes) -> bytes:
        return hmac.digest(self._key, object_id + _WHERE.pack(offset, length) + nonce, "sha256")

    def tag(self, object_id: bytes, offset: int, data: memoryview | bytes, nonce: bytes) -> bytes:
        return self._poly1305().generate_tag(self._one_time_key(object_id, offset, len(data), nonce), data)  # type: ignore[no-any-return]

    def matches(self, object_id: bytes, offset: int, data: memoryview | bytes, nonce: bytes, tag: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._poly1305().verify_tag(self._one_time_key(object_id, offset, len(data), nonce), data, tag)
        except InvalidSignature:
            return False
        return True


def checks_for(sums: ChunkSums, enabled: bool, encrypted: bool) -> ChunkSums | None:
    """The tags a pull asks for: none on a TLS link (its records are authenticated already)."""
    return sums if enabled and not encrypted else None


async def pull_chunks(
    peer: Any, object_id: bytes, size: int, into: Callable[[int, int], memoryview],
    sums: ChunkSums | None, source: str, counters: Any = None,
) -> int:
    """Reads `size` bytes of `object_id` from `peer` into `into(offset, n)`,
    the n bytes of the store they belong in; checks every chunk when `sums`
    is given. Returns how many chunks were asked for again. Raises
    ChunkDamaged when one stays wrong. `counters.received` (node/stats.py)
    counts the bytes that arrive.

    A chunk's bytes are written into the store by the connection as they
    arrive (`Connection.request_into`), decrypted there under TLS: a whole
    copy less per byte than landing them in a frame buffer first."""
    retried = 0
    tries: dict[int, int] = {}
    inflight: list[tuple[int, int, bytes, memoryview, asyncio.Future[Any]]] = []

    def ask(at: int, n: int) -> tuple[int, int, bytes, memoryview, asyncio.Future[Any]]:
        nonce = os.urandom(NONCE_SIZE) if sums is not None else b""
        dest = into(at, n)
        msg = m.StoreReadChunk(object_id=object_id, offset=at, length=n, nonce=nonce)
        return at, n, nonce, dest, peer.request_into(msg, dest)

    pos = 0
    try:
        while pos < size or inflight:
            while pos < size and len(inflight) < WINDOW:
                n = min(CHUNK, size - pos)
                inflight.append(ask(pos, n))
                pos += n
            at, n, nonce, dest, fut = inflight.pop(0)
            try:
                reply = await fut
            finally:
                peer.forget_landing(dest)
            chunk = reply.data
            # Only the bytes asked for land in the store: a short chunk would leave
            # a hole, a long one overwrite the object next to it.
            why = f"{source} sent {len(chunk)} bytes for the {n} at offset {at} of {size}" if len(chunk) != n else ""
            if not why and sums is not None and not sums.matches(object_id, at, chunk, nonce, reply.digest):
                why = f"the chunk at offset {at} of {size} from {source} failed its checksum"
            if why:
                tries[at] = tries.get(at, 0) + 1
                if tries[at] > RETRIES:
                    raise ChunkDamaged(f"{why} ({tries[at]} times)")
                retried += 1
                inflight.insert(0, ask(at, n))  # a fresh nonce: a tag is good for one request only
                continue
            if chunk is not dest:  # a small chunk comes in a frame of its own
                dest[:] = chunk
            if counters is not None:
                counters.received += n
    finally:
        # Given up (a damaged chunk, a lost peer, a cancelled pull): the store
        # behind these is freed, and nothing may still be written there.
        for _at, _n, _nonce, dest, _fut in inflight:
            peer.forget_landing(dest)
    return retried
