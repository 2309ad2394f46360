"""Hypothesis strategies for hostile frames, and the loop that sends them.

Before authentication a peer is nobody: it sends raw bytes, headers that
lie about their size, truncated headers, and handshake messages that are
junk or a real proof with bytes flipped.

After authentication (with a job's real pass) it sends messages of every
type the wire decoder knows, built from each type's own fields
(`msgspec.inspect`) but with hostile values: nan and inf, huge and
negative integers, escape sequences, ids of the wrong length, our own job
id (so some pass the authorization checks and reach the handlers); then
the same frames with bytes flipped, cut or wrongly typed, and headers that
claim more than the frame cap. A connection the service closes is dialled
again; each sent frame counts once.
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import strategies as st

from manta._private.protocol import messages as m

from .dos_support import HEADER, authenticate, dial, frame, read_frame

# What would end the cluster by design (an admin may shut it down): never sent.
EXCLUDED = {m.ShutdownCluster}
MESSAGE_TYPES = sorted((t for t in m.Message.__args__ if t not in EXCLUDED), key=lambda t: t.__name__)

MAX_U64 = 2**64 - 1
MIN_I64 = -(2**63)


def _ints(job_id: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, 1, -1, job_id, 2**31, 2**32 - 1, 2**63 - 1, MIN_I64, MAX_U64]),
        st.integers(MIN_I64, MAX_U64),
    )


FLOATS = st.one_of(st.sampled_from([math.inf, -math.inf, math.nan, -1.0, 1e308, 1e18, 0.5]), st.floats())
TEXT = st.one_of(st.sampled_from(["", "default", "CPU", "\x1b[2J\x1b[31mowned", "x" * 2000]),
                 st.text(st.characters(exclude_categories=["Cs"]), max_size=24))
BYTES = st.one_of(st.sampled_from([b"", b"\0" * 16, b"\xff" * 28, b"x" * 5000]), st.binary(max_size=40))


def _for_type(t: Any, job_id: int, depth: int) -> st.SearchStrategy[Any]:
    """Values of msgspec type `t`, hostile within the type (so most decode)."""
    mi = msgspec.inspect
    size = 4 if depth <= 3 else 0  # nested containers stay small, but well-typed
    if isinstance(t, mi.IntType):
        return _ints(job_id)
    if isinstance(t, mi.FloatType):
        return FLOATS
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.StrType):
        return TEXT
    if isinstance(t, (mi.BytesType, mi.ByteArrayType, mi.MemoryViewType)):
        return BYTES
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.EnumType):
        return st.sampled_from([e.value for e in t.cls])
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(list(t.values))
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return st.lists(_for_type(t.item_type, job_id, depth + 1), max_size=size)
    if isinstance(t, mi.TupleType):
        return st.tuples(*(_for_type(x, job_id, depth + 1) for x in t.item_types)).map(list)
    if isinstance(t, mi.DictType):
        return st.dictionaries(_for_type(t.key_type, job_id, depth + 1), _for_type(t.value_type, job_id, depth + 1),
                               max_size=size)
    if isinstance(t, mi.StructType):
        return st.tuples(*(_for_type(f.type, job_id, depth + 1) for f in t.fields)).map(list)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(_for_type(x, job_id, depth) for x in t.types))
    return st.one_of(st.none(), st.integers(-5, 5), TEXT)


_FIELDS: dict[type, Any] = {}


def message_values(t: type, job_id: int) -> st.SearchStrategy[list[Any]]:
    """`[tag, field, ...]`: how an array-like tagged message is encoded, with hostile fields."""
    info = _FIELDS.get(t) or _FIELDS.setdefault(t, msgspec.inspect.type_info(t))
    parts = [_for_type(f.type, job_id, 1) for f in info.fields]
    return st.tuples(st.just(t.__name__), *parts).map(list)


def _encode(value: list[Any]) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, msgspec.EncodeError, TypeError):
        return msgspec.msgpack.encode([value[0]])


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """`payload` with bytes flipped, cut, grown or shuffled."""
    data = bytearray(payload)
    how = draw(st.sampled_from(["flip", "cut", "grow", "splice", "retag"]))
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
    elif how == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "grow":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "splice" and len(data) > 2:
        i = draw(st.integers(0, len(data) - 1))
        data[i:i] = draw(st.binary(max_size=16))
    else:
        data = bytearray(_encode([draw(st.sampled_from(MESSAGE_TYPES)).__name__, *draw(st.lists(
            st.one_of(st.integers(-3, 3), TEXT, BYTES, st.none()), max_size=6))]))
    return bytes(data)


@st.composite
def post_auth_frames(draw: st.DrawFn, job_id: int, max_frame: int) -> tuple[str, bytes]:
    """(kind, bytes to send): one frame, or a lie about one."""
    t = draw(st.sampled_from(MESSAGE_TYPES))
    payload = _encode(draw(message_values(t, job_id)))
    roll = draw(st.integers(0, 99))
    if roll < 70:
        return t.__name__, frame(payload)
    if roll < 95:
        return "mutated", frame(draw(mutated(payload)))
    # A header that claims more than is sent: at most the cap (memory must
    # follow what arrives) or past it (the connection must close).
    claimed = draw(st.one_of(st.integers(1 << 20, max_frame), st.integers(max_frame + 1, 2**32 - 1)))
    sent = draw(st.integers(0, 300_000))
    return "lying header", HEADER.pack(claimed) + b"\xab" * sent


@st.composite
def pre_auth_frames(draw: st.DrawFn, proof: bytes) -> tuple[str, bytes]:
    """(kind, bytes sent after the server's challenge) from a peer with no credential."""
    roll = draw(st.integers(0, 5))
    if roll == 0:
        return "raw bytes", draw(st.binary(max_size=600))
    if roll == 1:
        return "lying header", HEADER.pack(draw(st.integers(0, 2**32 - 1))) + draw(st.binary(max_size=300))
    if roll == 2:
        return "truncated header", draw(st.binary(min_size=1, max_size=3))
    if roll == 3:
        value = draw(message_values(draw(st.sampled_from([m.Proof, m.Challenge, m.Welcome, m.Refused])), 0))
        return "junk handshake", frame(_encode(value))
    if roll == 4:
        return "mutated proof", frame(draw(mutated(proof)))
    return "messages before auth", frame(_encode(draw(message_values(draw(st.sampled_from(MESSAGE_TYPES)), 0))))


@dataclass
class Tally:
    """What one listener was sent, and how it answered."""

    frames: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0

    def count(self, kind: str) -> None:
        self.frames += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


class PostAuthPeer:
    """One authenticated connection to a listener, dialled again when the listener drops it."""

    def __init__(self, address: str, identity: Any) -> None:
        self.address = address
        self.identity = identity
        self.sock: socket.socket | None = None
        self.tally = Tally()

    def send(self, kind: str, data: bytes) -> None:
        if self.sock is None:
            self.sock = authenticate(self.address, self.identity)
            self.sock.setblocking(False)
        self.tally.count(kind)
        try:
            view = memoryview(data)
            while view:
                try:
                    n = self.sock.send(view)
                except BlockingIOError:
                    self._drain(wait=True)
                    continue
                view = view[n:]
            self._drain(wait=False)
        except (ConnectionError, OSError):
            self._reset()
            return
        if kind == "lying header":
            self._reset()  # the rest would be read as that frame's body

    def _drain(self, wait: bool) -> None:
        """Reads (and drops) replies, so this attacker is not also a slow reader."""
        assert self.sock is not None
        self.sock.settimeout(0.05 if wait else 0.0)
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed")
        except (BlockingIOError, TimeoutError):
            pass
        finally:
            if self.sock is not None:
                self.sock.setblocking(False)

    def _reset(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.tally.reconnects += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def send_pre_auth(address: str, tally: Tally, kind: str, data: bytes) -> None:
    """One connection: read the challenge, send `data`, and go (not waiting out the refusal's delay)."""
    for attempt in range(200):
        s = dial(address)
        if read_frame(s) is not None:
            break
        # Turned away: our previous connections are still counted as authenticating.
        s.close()
        tally.reconnects += 1
        time.sleep(0.01 * (attempt + 1))
    else:
        raise AssertionError(f"{address} sent no challenge")
    try:
        tally.count(kind)
        try:
            s.sendall(data)
        except (ConnectionError, OSError):
            pass
    finally:
        s.close()
