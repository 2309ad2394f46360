"""What a remote client asks its proxy, and the answers (docs/client.md).

Each travels encoded in a `ClientCall`/`ClientReply` body, relayed by the
head. They have a decoder of their own: they never join the cluster's wire
union, so no other service can be sent one. Values travel as the bytes of
`runtime.serialization`, made and read by the client alone: the proxy
stores and ships them as they are, and never unpickles what a client sends
(it runs on the head's node, with the head's user).
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol.chunks import Parts, split


class Call(msgspec.Struct, array_like=True, tag=True, frozen=True):
    pass


class RefInfo(msgspec.Struct, array_like=True, frozen=True):
    """A ref the proxy holds for the client: what the client's ObjectRef carries."""

    object_id: bytes
    owner: str
    cap: bytes


class Item(msgspec.Struct, array_like=True, frozen=True):
    """One value of a Get: all of it in `data`, or its start and a `download` to read the rest by Chunk."""

    data: memoryview  # the bytes fields here: views into the message they came in
    size: int
    download: int = 0


# --- client -> proxy ------------------------------------------------------------


class PutChunk(Call, frozen=True):
    upload: int
    offset: int
    total: int
    data: memoryview  # encoded from a memoryview of the value: no copy of its own


class PutEnd(Call, frozen=True):
    """The value is whole (uploaded by PutChunks, or all in `data`); `contained`: the refs inside it."""

    upload: int
    total: int
    data: memoryview
    contained: list[bytes]


class Get(Call, frozen=True):
    ids: list[bytes]
    timeout: float | None


class Chunk(Call, frozen=True):
    download: int
    offset: int
    size: int


class Wait(Call, frozen=True):
    ids: list[bytes]
    num_returns: int
    timeout: float | None
    fetch_local: bool


class Release(Call, frozen=True):
    """The client has no ObjectRef left of these."""

    ids: list[bytes]


class Borrow(Call, frozen=True):
    """A ref found inside a value the client read: the proxy holds it for the client from now on."""

    ref: RefInfo


class Submit(Call, frozen=True):
    fn_id: bytes
    name: str
    args: list[m.Arg]
    kwnames: list[str]
    pinned: list[bytes]
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    retry_exceptions: bool
    env_vars: dict[str, str]
    placement: m.Placement | None
    backpressure: int
    retry_on: list[str] = []  # retry_exceptions given as classes: their qualified names


class ActorCall(Call, frozen=True):
    actor_id: bytes
    method: str
    args: list[m.Arg]
    kwnames: list[str]
    pinned: list[bytes]
    num_returns: int
    max_task_retries: int
    name: str
    retry_exceptions: bool
    concurrency_group: str
    backpressure: int
    retry_on: list[str] = []


class CreateActor(Call, frozen=True):
    spec: m.ActorSpec
    pinned: list[bytes]


class HoldActor(Call, frozen=True):
    actor_id: bytes


class Cancel(Call, frozen=True):
    object_id: bytes
    force: bool
    recursive: bool


class Forward(Call, frozen=True):
    """A message for the cluster's head (or the proxy's node agent), asked as the client's job."""

    msg: bytes  # an encoded `messages` Msg
    to_agent: bool = False


class GenNext(Call, frozen=True):
    """The next item of a streaming generator task the client submitted: a
    ref (Refs of one), or Refs of none at its end."""

    task_id: bytes
    timeout: float | None


class GenReady(Call, frozen=True):
    task_id: bytes


class GenClose(Call, frozen=True):
    """The client's generator is gone: the items it never took are let go."""

    task_id: bytes


class PgReady(Call, frozen=True):
    """A ref ready once the placement group is created; its value is `value`,
    the group as the client serialized it (the proxy never reads it)."""

    pg_id: bytes
    value: bytes


class Story(Call, frozen=True):
    task_id: bytes


class End(Call, frozen=True):
    """The client shuts down: the proxy ends, and with it the job, without waiting out the grace period."""


# --- proxy -> client ------------------------------------------------------------


class Done(Call, frozen=True):
    pass


class Refs(Call, frozen=True):
    refs: list[RefInfo]


class Fetched(Call, frozen=True):
    items: list[Item]


class Data(Call, frozen=True):
    data: memoryview  # encoded from a memoryview of the stored value


class Ready(Call, frozen=True):
    ids: list[bytes]


class Flag(Call, frozen=True):
    value: bool


class Records(Call, frozen=True):
    """A task's story: (task id, step, stimulus id, time, detail) each."""

    records: list[tuple[str, str, int, float, str]]


class Answer(Call, frozen=True):
    msg: bytes  # an encoded `messages` Msg


class Failed(Call, frozen=True):
    """The call raised: the exception, pickled by the proxy (only the client unpickles it)."""

    error: bytes


Any_ = Union[  # noqa: UP007 (a Union of the structs, for one decoder)
    PutChunk, PutEnd, Get, Chunk, Wait, Release, Borrow, Submit, ActorCall, CreateActor, HoldActor, Cancel,
    Forward, GenNext, GenReady, GenClose, PgReady, Story, End, Done, Refs, Fetched, Data, Ready, Flag, Records,
    Answer, Failed,
]

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Any_)
encode = _encoder.encode
DecodeError = (msgspec.DecodeError, msgspec.ValidationError)


EMPTY = cm.EMPTY


def encode_parts(call: Any) -> bytes | Parts:
    """A call's or an answer's encoding: as parts, around a large chunk of a value."""
    if type(call) in (PutChunk, Data) and len(call.data) >= cm.AS_IS:
        parts = split(call, "data", [call.data])
        if parts is not None:
            return parts
    return encode(call)


def decode(body: bytes | memoryview) -> Any:
    return _decoder.decode(body)


def encode_msg(msg: Any) -> bytes:
    return m.encode(msg)


def decode_msg(data: bytes) -> Any:
    return m.decode(data)
