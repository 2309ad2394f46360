"""Encodings cut where a large bytes field begins.

`Connection.send_chunk` writes a `StoreChunk` as its encoded prefix followed
by the store's bytes, so they are not copied into a message first; the
receiving side can read the prefix back off a frame's first bytes
(`chunk_head`) and decrypt or copy the data straight into its own store.
`split` does the same for any message with one large bytes field, nested
as deep as need be (a remote client's value chunk inside its call).
"""

# Annotations are not postponed: see protocol/messages.py.

from typing import Any

import msgspec
from msgspec.structs import replace

from manta._private.protocol.messages import StoreChunk, encode

Parts = list[bytes | memoryview]
# Stands in for the large field while the rest is encoded; found again by
# its bin8 header and bytes. A message whose other fields hold it too is
# encoded whole instead (`split` returns None).
_STAND_IN = b"\xc4\x10" + bytes.fromhex("6d616e7461a5f1d3097e42c8b0e61d3b")

# A bin32 header (0xc6, then a big-endian length) starts the data.
_BIN32 = 0xC6
_chunk_decoder: msgspec.msgpack.Decoder[StoreChunk] = msgspec.msgpack.Decoder(StoreChunk)
# The array header and type tag every chunk's encoding starts with.
_LEAD = encode(StoreChunk(rid=0, digest=b"", data=memoryview(b"")))[:-5]  # less rid 0 and two empty bins


def chunk_prefix(rid: int, size: int, digest: bytes = b"") -> bytes:
    """The encoding of `StoreChunk(rid, digest, data)` up to `data`'s bytes.

    msgpack ends the encoding of an empty `data` with a bin8 header (c4 00);
    a bin32 header (c6 + big-endian length) takes its place.
    """
    empty = encode(StoreChunk(rid=rid, digest=digest, data=memoryview(b"")))
    assert empty[-2:] == b"\xc4\x00"
    return empty[:-2] + b"\xc6" + size.to_bytes(4, "big")


def chunk_head(head: bytes, size: int) -> tuple[int, bytes, int] | None:
    """(rid, digest, length of the prefix) when the frame of `size` bytes
    that begins with `head` is a StoreChunk, else None.

    The data's header must say exactly the bytes the frame has left, and
    what comes before it must decode as a chunk: a byte in the digest that
    happens to look like a header fails the second check."""
    if not head.startswith(_LEAD):
        return None
    for at in range(len(_LEAD), len(head) - 4):
        if head[at] != _BIN32 or int.from_bytes(head[at + 1 : at + 5], "big") != size - at - 5:
            continue
        try:
            chunk = _chunk_decoder.decode(head[:at] + b"\xc4\x00")
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        return chunk.rid, chunk.digest, at + 5
    return None


def split(msg: Any, field: str, data: Parts) -> Parts | None:
    """`msg`'s encoding with its bytes field `field` holding `data` joined,
    as parts: the encoding before the field, `data` as it is, the rest.
    None if the encoding cannot be cut (then encode the message whole)."""
    size = sum(len(p) for p in data)
    enc = encode(replace(msg, **{field: _STAND_IN[2:]}))
    at = enc.find(_STAND_IN)
    if at < 0 or enc.find(_STAND_IN, at + 1) >= 0:
        return None
    return [enc[:at] + b"\xc6" + size.to_bytes(4, "big"), *data, enc[at + len(_STAND_IN) :]]
