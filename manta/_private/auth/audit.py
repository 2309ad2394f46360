"""The audit trail: one JSON object per line, for people and SIEM shippers.

Every record has the same fields (docs/audit.md describes them):

    time       seconds since the epoch (float)
    principal  who: "job 3", "token 5f0c…", "node 1a2b…", "the cluster's owner", "unauthenticated"
    role       view | submit | admin | cluster
    namespace  the namespace acted in ("" where none applies)
    action     e.g. "auth.login", "authz.refused", "actor.kill", "kv.put", "node.join"
    target     what it acted on: an actor id, "ns/key", a token id, a node id
    outcome    "ok" | "refused" | "failed"
    peer       the peer's address ("unix" for a local socket)
    detail     why, for refusals and failures

Never a secret: tokens appear by id, KV entries by key, never their values.
Failed authentication is recorded at most `FAILURES_PER_S` times a second
per peer, and refusals of authenticated requests at most `REFUSALS_PER_S`
times a second per principal, each with a count of the ones left out, so
neither a flood of bad handshakes nor a job asking again and again for
what it may not have can fill the disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from manta._private.protocol.identity import NOBODY, Principal

log = logging.getLogger(__name__)

FAILURES_PER_S = 5
REFUSALS_PER_S = 20


class Window:
    """At most `per_s` events a second per key, without I/O; the ones past it
    are counted, for one summary when the key's next second begins."""

    def __init__(self, per_s: int, clock: Callable[[], float], max_keys: int = 4096) -> None:
        self.per_s = per_s
        self.clock = clock
        self.max_keys = max_keys
        self._window: dict[str, tuple[int, int]] = {}  # key -> (second, events in it)
        self._skipped: dict[str, int] = {}

    def admit(self, key: str) -> tuple[bool, int]:
        """Whether this event is recorded, and how many of the key's were left
        out before it (to summarise first)."""
        second = int(self.clock())
        start, n = self._window.get(key, (second, 0))
        skipped = 0
        if start != second:
            skipped = self._skipped.pop(key, 0)
            start, n = second, 0
        if n >= self.per_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            self._window[key] = (start, n)
            return False, skipped
        self._window[key] = (start, n + 1)
        if len(self._window) > self.max_keys:  # forget quiet keys; the table stays bounded
            self._window = {key: self._window[key]}
            self._skipped = {k: v for k, v in self._skipped.items() if k == key}
        return True, skipped


class AuditLog:
    def __init__(self, path: str | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._fd = -1
        self._lock = threading.Lock()
        self._failures = Window(FAILURES_PER_S, clock)
        self._refusals = Window(REFUSALS_PER_S, clock)
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            self._fd = fd

    def record(
        self, principal: Principal, action: str, *, target: str = "", namespace: str = "", outcome: str = "ok",
        peer: str = "", detail: str = "",
    ) -> None:
        if self._fd < 0:
            return
        rec = {
            "time": round(self.clock(), 6), "principal": principal.name, "role": principal.role.name.lower(),
            "namespace": namespace, "action": action, "target": target, "outcome": outcome, "peer": peer,
            "detail": detail,
        }
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                os.write(self._fd, line)
            except OSError as e:
                log.error("cannot write the audit log %s: %s", self.path, e)

    def auth_failed(self, peer: str, detail: str) -> None:
        """A failed handshake, rate-limited per peer address (any port: each
        connection has its own)."""
        host = peer.rpartition(":")[0] or peer
        recorded, skipped = self._failures.admit(host)
        if skipped:
            self.record(NOBODY, "auth.failed", outcome="refused", peer=host,
                        detail=f"{skipped} more failed attempts not recorded one by one")
        if recorded:
            self.record(NOBODY, "auth.failed", outcome="refused", peer=peer, detail=detail)

    def refused(self, principal: Principal, action: str, *, target: str = "", namespace: str = "",
                peer: str = "", detail: str = "") -> None:
        """An authenticated request refused, rate-limited per principal."""
        recorded, skipped = self._refusals.admit(principal.name)
        if skipped:
            self.record(principal, "authz.refused", outcome="refused", peer=peer,
                        detail=f"{skipped} more refusals not recorded one by one")
        if recorded:
            self.record(principal, action, target=target, namespace=namespace, outcome="refused", peer=peer,
                        detail=detail)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def peer_of(conn: Any) -> str:
    """How the audit log names a connection's peer."""
    transport = getattr(conn, "transport", None)
    name = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return "unix"
