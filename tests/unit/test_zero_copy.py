"""Large bytes moved without copies.

- Chunks landing where they belong: the frame decoder writes a chunk's bytes
  straight into the store (`FrameDecoder.land`), fed as plaintext arrives
  (`feed`) or as the TLS layer decrypts into it (`buffer`/`filled`).
- Messages sent around a large field (`chunks.split`), nested: a remote
  client's value chunks, relayed by the head as they came.
- A serialized value read a piece at a time (`SerializedValue.piece`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from manta._private.client import calls as c
from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol.chunks import chunk_head, chunk_prefix, split
from manta._private.protocol.framing import HEADER, FrameDecoder
from manta._private.runtime.serialization import serialize

MB = 1 << 20


def _stream(rng: random.Random) -> tuple[bytes, list[Any], dict[int, bytes]]:
    """Frames of plain payloads and of chunks (rid -> data); what should come out, in order."""
    parts: list[bytes] = []
    expect: list[Any] = []
    chunks: dict[int, bytes] = {}
    for i in range(1, 40):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.choice((FrameDecoder.BIG, MB, 4 * MB, 100)))
            digest = rng.choice((b"", b"\xc6" * 16, rng.randbytes(16)))
            frame = chunk_prefix(i, len(data), digest) + data
            chunks[i] = data
            expect.append(("chunk", i, digest))
        else:
            frame = rng.randbytes(rng.choice((0, 7, 300_000, 2 * MB)))
            expect.append(frame)
        parts.append(HEADER.pack(len(frame)) + frame)
    return b"".join(parts), expect, chunks


class Store:
    """A lander over one bytearray: chunk `rid` lands at its own offset."""

    def __init__(self, chunks: dict[int, bytes], skip: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.offsets: dict[int, int] = {}
        at = 0
        for rid, data in chunks.items():
            self.offsets[rid] = at
            at += len(data)
        self.mem = bytearray(at)
        self.chunks = chunks
        self.skip = skip
        self.landed: set[int] = set()

    def land(self, head: bytes, size: int) -> Any:
        parsed = chunk_head(head, size)
        if parsed is None or parsed[0] in self.skip:
            return None
        rid, digest, plen = parsed
        at = self.offsets[rid]
        self.landed.add(rid)
        return plen, memoryview(self.mem)[at : at + size - plen], ("chunk", rid, digest)


def _check(out: list[Any], expect: list[Any], store: Store) -> None:
    got = [x if isinstance(x, tuple) else bytes(x) for x in out]
    for i, (g, e) in enumerate(zip(got, expect, strict=True)):
        if isinstance(e, tuple) and not isinstance(g, tuple):
            # Not landed (too small, or refused): decoded as the frame it is.
            msg = m.decode(g)
            assert isinstance(msg, m.StoreChunk) and (msg.rid, msg.digest) == e[1:]
            assert bytes(msg.data) == store.chunks[msg.rid]
            continue
        assert g == e, f"frame {i}"
    for rid in store.landed:
        at = store.offsets[rid]
        assert store.mem[at : at + len(store.chunks[rid])] == store.chunks[rid]


def test_chunks_land_in_place_through_feed_at_any_split() -> None:
    rng = random.Random(3)
    stream, expect, chunks = _stream(rng)
    for steps in ((1, 70), (1000, 70_000), (60_000, 5 * MB)):
        store = Store(chunks, skip={min(chunks)})
        dec = FrameDecoder(16 * MB)
        dec.land = store.land
        out: list[Any] = []
        pos = 0
        while pos < len(stream):
            n = rng.randint(*steps)
            out += dec.feed(stream[pos : pos + n])
            pos += n
        _check(out, expect, store)
        assert dec.buffered == 0
        big = {rid for rid, d in chunks.items() if len(d) >= FrameDecoder.BIG and rid != min(chunks)}
        # A frame that arrived whole in one read is cut out as it is.
        assert store.landed == big if steps[1] < FrameDecoder.BIG else store.landed <= big


def test_chunks_land_in_place_when_decrypted_into_the_decoders_buffer() -> None:
    rng = random.Random(5)
    stream, expect, chunks = _stream(rng)
    store = Store(chunks)
    dec = FrameDecoder(16 * MB)
    dec.land = store.land
    out: list[Any] = []
    pos = 0
    while pos < len(stream):
        buf = dec.buffer()
        n = min(len(buf), rng.choice((1, 30, 16_384, 400_000)), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        del buf
        pos += n
        out += dec.filled(n)
    _check(out, expect, store)
    assert dec.buffered == 0


def test_a_diverted_chunk_writes_nothing_more_and_the_stream_goes_on() -> None:
    data = b"d" * (2 * MB)
    frame = chunk_prefix(9, len(data)) + data
    stream = HEADER.pack(len(frame)) + frame + HEADER.pack(3) + b"end"
    store = Store({9: data})
    dec = FrameDecoder(16 * MB)
    dec.land = store.land
    assert dec.feed(stream[:MB]) == [] and dec.landing
    dec.divert()
    assert dec.feed(stream[MB:]) == [b"end"]  # nothing stands for the diverted chunk
    landed = bytes(store.mem)
    assert landed[: MB - 4 - 20] == data[: MB - 24] and landed[MB:] == bytes(MB)


def test_the_head_of_a_chunk_is_read_back_and_nothing_else_passes_for_one() -> None:
    for rid, digest in ((1, b""), (2**40, b"\xc6" * 16), (300, b"\xc6\x00\x00\x10\x00" * 3 + b"x")):
        prefix = chunk_prefix(rid, 5 * MB, digest)
        size = len(prefix) + 5 * MB
        assert chunk_head((prefix + bytes(64))[:64], size) == (rid, digest, len(prefix))
        assert chunk_head((prefix + bytes(64))[:64], size + 1) is None  # the data's length must match
    assert chunk_head(m.encode(m.LogLines(job_id=1, prefix="p", is_err=False, text="x" * 100))[:64], 120) is None
    assert chunk_head(bytes(64), 100) is None


def test_a_message_split_around_its_large_field_decodes_as_the_whole() -> None:
    data = memoryview(bytes(range(256)) * 4000)
    inner = split(c.Data(data=c.EMPTY), "data", [data[:1000], data[1000:]])
    assert inner is not None and inner[1].obj is data.obj  # the data itself, not a copy
    outer = split(cm.ClientReply(body=c.EMPTY, rid=2**40), "body", inner)
    assert outer is not None
    msg = m.decode(b"".join(bytes(p) for p in outer))
    assert isinstance(msg, cm.ClientReply) and msg.rid == 2**40
    assert bytes(c.decode(msg.body).data) == bytes(data)
    # Where the rest of the message could be mistaken for the cut, it is not cut.
    from manta._private.protocol import chunks
    assert split(c.PutChunk(upload=1, offset=0, total=5, data=c.EMPTY), "data", [memoryview(b"x")]) is not None
    sneaky = c.PutEnd(upload=1, total=5, data=c.EMPTY, contained=[chunks._STAND_IN[2:]])
    assert split(sneaky, "data", [memoryview(b"x")]) is None


def test_a_serialized_value_read_in_pieces_is_what_it_lays_out_whole() -> None:
    values = [np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000),
              {"a": np.ones(10**6, dtype=np.uint8), "b": np.arange(10**6)}, b"x" * 5_000_000, "small"]
    for value in values:
        sv = serialize(value)
        whole = sv.to_bytes()
        for step in (4096, 1 << 20, 7_777_777):
            assert b"".join(bytes(sv.piece(o, o + step)) for o in range(0, sv.size, step)) == whole
    sv = serialize(np.ones(4 << 20, dtype=np.uint8))
    inside = sv.piece(1 << 20, 2 << 20)
    assert inside.obj is sv.buffers[0].obj  # within the array: a view of it
