"""Bounds on connections, and who may start a handshake: decisions without I/O.

Before a peer has authenticated it is nobody, and all it can cost a service
is what the service gives it: a socket, a small buffer, a handshake's CPU
and a log line. `Gate` bounds each of these per peer address:

- at most `max_unauthenticated` connections from one TCP address may be
  mid-handshake at once (a Unix socket is 0600, so its peers are this user's
  own processes: they are not counted, and a burst of workers starting is
  never refused);
- a failed handshake is refused only after a delay that doubles with each
  failure from that address (reset after a quiet `FORGET_S`), so guessing
  is slow, and the waiting connection keeps its slot meanwhile;
- the log says what was refused at most once per interval per address
  (`policy.Refusals.note`, the one rate limiter).

`Limits` holds the numbers a `Connection` enforces itself: the frame cap
after authentication, the handshake's deadline and how much may wait in
its send buffer for a peer that does not read.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from manta._private.auth.policy import Refusals
from manta._private.config import Config

log = logging.getLogger(__name__)

# How a Unix socket's peer is named: never counted against a limit.
LOCAL = "unix"


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame: int = Config().max_frame_bytes
    handshake_timeout_s: float = Config().handshake_timeout_s
    max_unauthenticated: int = Config().max_unauthenticated_per_peer
    max_send_buffer: int = Config().max_send_buffer_bytes

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(
            max_frame=config.max_frame_bytes,
            handshake_timeout_s=config.handshake_timeout_s,
            max_unauthenticated=config.max_unauthenticated_per_peer,
            max_send_buffer=config.max_send_buffer_bytes,
        )


DEFAULT_LIMITS = Limits()


def peer_key(peername: object) -> str:
    """The address a peer is counted under: its IP for TCP (any port), else LOCAL."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0])
    return LOCAL


class Gate:
    """One per listening process, shared by its listeners."""

    BACKOFF_FIRST_S = 0.05
    BACKOFF_MAX_S = 5.0
    # A peer with no failure for this long starts again from the first delay.
    FORGET_S = 60.0
    # Addresses whose failures are remembered at most (the oldest go first).
    PEERS = 4096

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, clock: Callable[[], float] = time.monotonic,
        notes: Refusals | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.notes = notes or Refusals(log, clock)
        self._open: dict[str, int] = {}  # peer -> connections not yet authenticated
        # peer -> (failures, when the last was), oldest first (an OrderedDict drops its oldest in O(1))
        self._failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        # Totals, for tests and figures.
        self.turned_away = 0
        self.refused = 0

    def admit(self, peer: str) -> bool:
        """A connection from `peer` arrived: may it start a handshake? If so, `leave` must follow."""
        if peer == LOCAL:
            return True
        n = self._open.get(peer, 0)
        if n >= self.limits.max_unauthenticated:
            self.turned_away += 1
            self.notes.note(
                f"flood {peer}", "turned away a connection from %s: %d of its connections are already "
                "authenticating (max_unauthenticated_per_peer)", peer, n,
            )
            return False
        self._open[peer] = n + 1
        return True

    def leave(self, peer: str) -> None:
        """An admitted connection authenticated, or closed before it did."""
        if peer == LOCAL:
            return
        n = self._open.get(peer, 0) - 1
        if n > 0:
            self._open[peer] = n
        else:
            self._open.pop(peer, None)

    def failed(self, peer: str, why: str) -> float:
        """A handshake from `peer` failed: how long to wait before refusing it."""
        now = self.clock()
        self.refused += 1
        n, last = self._failures.pop(peer, (0, now))
        if now - last > self.FORGET_S:
            n = 0
        n += 1
        self._failures[peer] = (n, now)  # re-inserted: the dict stays oldest-first
        if len(self._failures) > self.PEERS:
            self._failures.popitem(last=False)
        delay = min(self.BACKOFF_MAX_S, self.BACKOFF_FIRST_S * 2 ** min(n - 1, 30))
        self.notes.note(
            f"auth {peer}", "authentication failed from %s: %s (failure %d; refused after %.2f s)",
            peer if peer != LOCAL else "a local process", why, n, delay,
        )
        return delay

    def unauthenticated(self, peer: str) -> int:
        return self._open.get(peer, 0)

    def validate(self) -> None:
        assert all(n > 0 for n in self._open.values()), self._open
        assert len(self._failures) <= self.PEERS
