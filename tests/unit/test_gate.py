"""Bounds before and after authentication, without sockets: the gate, the
rate-limited log line, and a frame decoder that believes no header."""

from __future__ import annotations

import logging

import pytest

from manta._private.auth.policy import Refusals
from manta._private.protocol.framing import HEADER, FrameDecoder, FrameTooLarge, encode_frame
from manta._private.transport.gate import LOCAL, Gate, Limits, peer_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gate_limits_unauthenticated_connections_per_address() -> None:
    gate = Gate(Limits(max_unauthenticated=3), clock=Clock())
    assert all(gate.admit("10.0.0.1") for _ in range(3))
    assert not gate.admit("10.0.0.1")
    assert gate.admit("10.0.0.2"), "another address has its own allowance"
    gate.leave("10.0.0.1")
    assert gate.admit("10.0.0.1"), "a slot frees when a connection authenticates or closes"
    assert gate.turned_away == 1
    # Local peers (a 0600 Unix socket: this user's processes) are never counted.
    assert all(gate.admit(LOCAL) for _ in range(100))
    gate.validate()


def test_gate_backoff_doubles_and_is_forgotten() -> None:
    clock = Clock()
    gate = Gate(clock=clock)
    delays = [gate.failed("10.0.0.1", "bad") for _ in range(12)]
    assert delays[0] == Gate.BACKOFF_FIRST_S
    assert delays[1] == 2 * delays[0] and delays[2] == 4 * delays[0]
    assert delays[-1] == Gate.BACKOFF_MAX_S
    assert gate.failed("10.0.0.2", "bad") == Gate.BACKOFF_FIRST_S, "per address"
    clock.now += Gate.FORGET_S + 1
    assert gate.failed("10.0.0.1", "bad") == Gate.BACKOFF_FIRST_S
    for i in range(Gate.PEERS + 10):
        gate.failed(f"peer{i}", "bad")
    gate.validate()


def test_note_logs_once_per_interval_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    notes = Refusals(logging.getLogger("test.notes"), clock)
    with caplog.at_level(logging.WARNING, logger="test.notes"):
        for _ in range(1000):
            notes.note("k", "failed from %s", "x")
        clock.now += Refusals.EVERY_S
        notes.note("k", "failed from %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["failed from x", f"failed from x (and 999 more like it in the last {Refusals.EVERY_S:g} s)"]


def test_peer_key() -> None:
    assert peer_key(("10.1.2.3", 5555)) == "10.1.2.3"
    assert peer_key(("::1", 5555, 0, 0)) == "::1"
    assert peer_key("") == LOCAL and peer_key(None) == LOCAL


def test_a_lying_header_costs_only_what_arrived() -> None:
    limit = 128 << 20
    dec = FrameDecoder(limit)
    claimed = limit - 1
    dec.feed(HEADER.pack(claimed) + b"x" * (FrameDecoder.BIG + 10))
    assert dec._big is not None and len(dec._big) < 2 * FrameDecoder.BIG, "not the size the header claimed"
    for _ in range(3):
        dec.feed(b"y" * 1000)
    assert dec.buffered == FrameDecoder.BIG + 3010
    with pytest.raises(FrameTooLarge):
        FrameDecoder(limit).feed(HEADER.pack(limit + 1))


def test_a_large_frame_that_grows_comes_out_whole() -> None:
    payload = bytes(range(256)) * ((FrameDecoder.PREALLOC + 5000) // 256)
    stream = encode_frame(payload) + encode_frame(b"after")
    for step in (65536, 1 << 20, len(stream)):
        dec = FrameDecoder(1 << 30)
        out: list[bytes] = []
        for i in range(0, len(stream), step):
            out += [bytes(f) for f in dec.feed(stream[i : i + step])]
        assert out == [payload, b"after"]
