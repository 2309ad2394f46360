"""The audit log's rate limits, on an injected clock: a flood of refusals from
one principal, or of bad handshakes from one address, is recorded a few
times a second with a count of the rest, and others are recorded in full."""

import json

from manta._private.auth.audit import FAILURES_PER_S, REFUSALS_PER_S, AuditLog, Window
from manta._private.protocol.identity import Kind, Principal, Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_admits_per_second_and_counts_the_rest_once():
    clock = Clock()
    w = Window(3, clock)
    assert [w.admit("a") for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert w.admit("b") == (True, 0), "another key has a window of its own"
    clock.now += 1
    assert w.admit("a") == (True, 2), "the two left out are counted once, at the next second"
    assert w.admit("a") == (True, 0)


def test_a_window_stays_bounded_however_many_keys_come():
    w = Window(1, Clock(), max_keys=100)
    for i in range(10_000):
        w.admit(f"peer{i}")
    assert len(w._window) <= 101 and len(w._skipped) <= 101


def test_refusals_of_one_principal_are_rate_limited_and_others_are_kept(tmp_path):
    clock = Clock()
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), clock)
    greedy = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="job 7")
    other = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="job 8")
    for _ in range(1000):
        audit.refused(greedy, "actor.kill", target="a1", detail="not its actor")
    audit.refused(other, "kv.put", target="ns/k", detail="not its namespace")
    for _ in range(50):
        audit.auth_failed("10.0.0.9:5000", "bad proof")
    clock.now += 1
    audit.refused(greedy, "actor.kill", target="a1", detail="not its actor")
    audit.close()
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [r for r in recs if r["principal"] == "job 7"]
    assert len(mine) == REFUSALS_PER_S + 2
    summary = [r for r in mine if r["action"] == "authz.refused"]
    assert len(summary) == 1 and summary[0]["detail"].startswith(f"{1000 - REFUSALS_PER_S} more refusals")
    assert [r["action"] for r in recs if r["principal"] == "job 8"] == ["kv.put"]
    assert len([r for r in recs if r["action"] == "auth.failed"]) == FAILURES_PER_S
    assert all(r["outcome"] == "refused" for r in recs)
