"""Browser sessions of the head's HTTP server, without I/O.

A browser logs in once with a token (`POST /api/login`) and gets a random
session id in an HttpOnly cookie, plus a CSRF token it must echo in
`X-CSRF-Token` on every state-changing request. The table maps ids to the
token id they were opened with (the principal is resolved again from the
token table on every request, so revoking a token ends its sessions),
their CSRF token and expiry. It is bounded: past `max_sessions` the one
expiring first is dropped, so a flood of logins costs memory only up to
the bound. The clock and the randomness are injected for tests.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    token_id: str
    csrf: str
    expires: float


class SessionTable:
    def __init__(
        self, clock: Callable[[], float], *, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.random = random
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, token_id: str, token_expires: float = 0.0) -> Session:
        """A new session for a token; it ends with the token if that expires sooner."""
        now = self.clock()
        self._expire(now)
        if len(self._sessions) >= self.max_sessions:
            first = min(self._sessions.values(), key=lambda s: s.expires)
            del self._sessions[first.session_id]
        expires = now + self.ttl_s
        if token_expires:
            expires = min(expires, token_expires)
        s = Session(self.random(32).hex(), token_id, self.random(32).hex(), expires)
        self._sessions[s.session_id] = s
        return s

    def get(self, session_id: str) -> Session | None:
        s = self._sessions.get(session_id)
        if s is None:
            return None
        if s.expires <= self.clock():
            del self._sessions[session_id]
            return None
        return s

    def close(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def close_token(self, token_id: str) -> int:
        """Ends every session opened with a token (it was revoked); returns how many."""
        gone = [sid for sid, s in self._sessions.items() if s.token_id == token_id]
        for sid in gone:
            del self._sessions[sid]
        return len(gone)

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())
