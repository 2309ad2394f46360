"""Attacks before authentication: slowloris, a connection flood from one
address, and guessing in a loop.

- A connection that does not finish its handshake within
  `handshake_timeout_s` is closed (here 1.5 s), whether it sends nothing
  or a byte at a time.
- At most `max_unauthenticated_per_peer` connections (here 8) from one
  TCP address may be authenticating at once; more are turned away at
  once, with one log line, not one per connection.
- Each failed handshake from an address is refused after a longer delay
  than the last, and the log says so a bounded number of times; the
  audit log keeps a rate-limited record.

Meanwhile another driver is served throughout.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from manta._private.protocol import messages as m

from .dos_support import Cluster, closed_by_peer, cluster_fixture, dial, frame, read_frame, served_meanwhile

pytestmark = pytest.mark.timeout(240)

TIMEOUT_S = 1.5
PER_PEER = 8


cluster = cluster_fixture({"handshake_timeout_s": TIMEOUT_S, "max_unauthenticated_per_peer": PER_PEER})


def _bad_proof() -> bytes:
    return frame(m.encode(m.Proof(nonce=os.urandom(32), pass_blob=b"forged", pass_sig=b"x" * 64, proof=b"y" * 64)))


def test_slowloris_is_cut_off_at_the_handshake_timeout(cluster: Cluster) -> None:
    with served_meanwhile(cluster):
        silent = dial(cluster.head_tcp)
        dripping = dial(cluster.head_tcp)
        assert read_frame(silent) is not None and read_frame(dripping) is not None  # the challenges
        started = time.monotonic()
        # A frame of 100 bytes, one byte every 0.3 s: never whole in time.
        drip = frame(b"p" * 100)
        dripping.settimeout(0.3)
        for i in range(int(TIMEOUT_S / 0.3) + 15):
            try:
                dripping.send(drip[i : i + 1])
                if not dripping.recv(4096):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        else:
            pytest.fail("a connection sending a byte at a time was never closed")
        assert closed_by_peer(silent, 10), "a silent connection was never closed"
        # Closed after the timeout (and the refusal's short delay), not held for ever.
        assert time.monotonic() - started < TIMEOUT_S + 8
        assert f"no handshake within {TIMEOUT_S:g} s" in cluster.log("head")
        assert cluster.alive()


def test_a_flood_from_one_address_is_turned_away(cluster: Cluster) -> None:
    flood: list[socket.socket] = []
    # The other driver (over the head's Unix socket) is served meanwhile.
    with served_meanwhile(cluster):
        try:
            for _ in range(5 * PER_PEER):
                flood.append(dial(cluster.head_tcp))
            served = [s for s in flood if read_frame(s) is not None]
            # Those let in got a challenge; the rest were closed without one.
            assert len(served) <= PER_PEER, len(served)
            assert len(served) >= PER_PEER // 2
            log = cluster.log("head")
            turned = [ln for ln in log.splitlines() if "turned away a connection from 127.0.0.1" in ln]
            assert 1 <= len(turned) <= 2, turned  # one line for 32 refusals (rate-limited)
        finally:
            for s in flood:
                s.close()
    # Once the flood's connections are gone, the address may connect again.
    deadline = time.monotonic() + 10
    while True:
        s = dial(cluster.head_tcp)
        try:
            if read_frame(s) is not None:
                break
        finally:
            s.close()
        assert time.monotonic() < deadline, "the address stayed locked out"
        time.sleep(0.1)


def test_failed_handshakes_back_off_and_their_log_lines_are_bounded(cluster: Cluster) -> None:
    delays = []
    for _ in range(6):
        s = dial(cluster.head_tcp)
        try:
            assert read_frame(s) is not None
            sent = time.monotonic()
            s.sendall(_bad_proof())
            s.settimeout(30)
            reply = read_frame(s)  # the refusal, after its delay
            delays.append(time.monotonic() - sent)
            assert reply is not None and isinstance(m.decode_handshake(reply), m.Refused)
        finally:
            s.close()
    # Each refusal waits longer than the one before (0.05 s, doubling, counting this
    # address's earlier failures): the 6th at least 1.6 s.
    assert delays[-1] >= 1.5, delays
    assert delays[-1] > 4 * delays[0], delays
    assert delays == sorted(delays) or delays[-1] >= 4.9, delays
    # Dozens of failures more (not waited for): few log lines, a bounded audit.
    for _ in range(60):
        s = dial(cluster.head_tcp)
        read_frame(s)
        s.sendall(_bad_proof())
        s.close()
    time.sleep(0.5)
    lines = [ln for ln in cluster.log("head").splitlines() if "authentication failed from 127.0.0.1" in ln]
    assert 1 <= len(lines) <= 3, lines
    failed = [r for r in cluster.audit() if r["action"] == "auth.failed"]
    assert failed, "failed handshakes are audited"
    assert len(failed) < 40, len(failed)
    assert cluster.alive()
