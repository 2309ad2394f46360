"""The HTTP server's session table (head/http/sessions.py), on an injected clock."""

from __future__ import annotations

import itertools

from manta._private.head.http.sessions import SessionTable, csrf_ok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(clock: Clock, **kw: int) -> SessionTable:
    counter = itertools.count()
    return SessionTable(clock, random=lambda n: next(counter).to_bytes(n, "big"), ttl_s=100, **kw)


def test_a_session_lasts_its_ttl_or_its_tokens_life_whichever_ends_first() -> None:
    clock = Clock()
    t = table(clock)
    a = t.open("tok-a")
    b = t.open("tok-b", token_expires=1010.0)
    assert a.session_id != b.session_id and a.csrf != a.session_id
    clock.now = 1050.0
    assert t.get(a.session_id) == a and t.get(b.session_id) is None
    clock.now = 1100.0
    assert t.get(a.session_id) is None and len(t) == 0


def test_the_table_is_bounded_and_drops_the_session_expiring_first() -> None:
    clock = Clock()
    t = table(clock, max_sessions=3)
    first = t.open("x")
    clock.now += 1
    rest = [t.open("x") for _ in range(3)]
    assert len(t) == 3 and t.get(first.session_id) is None
    assert all(t.get(s.session_id) == s for s in rest)


def test_close_and_close_token() -> None:
    clock = Clock()
    t = table(clock)
    a, b, c = t.open("one"), t.open("one"), t.open("two")
    assert t.close(a.session_id) and not t.close(a.session_id)
    assert t.close_token("one") == 1 and t.get(b.session_id) is None and t.get(c.session_id) == c


def test_csrf_is_compared_whole() -> None:
    t = table(Clock())
    s = t.open("x")
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, None) and not csrf_ok(s, "") and not csrf_ok(s, s.csrf[:-1])
