"""Heartbeats, node-death detection and the memory monitor's cadence, on a fake clock."""

from __future__ import annotations

from manta._private.control.liveness import NodeLiveness
from manta._private.node.memory import KILL_GRACE_S, Candidate, MemoryMonitor
from manta._private.node.reporting import ReportSchedule

GIB = 1 << 30


def test_a_node_silent_past_the_timeout_is_dead_once(clock):
    live = NodeLiveness(timeout=2.0)
    live.beat(b"a", clock())
    live.beat(b"b", clock())
    clock.advance(1.5)
    live.beat(b"b", clock())
    assert live.expired(clock()) == []
    clock.advance(0.6)
    assert live.expired(clock()) == [b"a"]
    assert live.expired(clock()) == []  # reported once
    clock.advance(2.0)
    assert live.expired(clock()) == [b"b"]
    assert live.check_every() == 0.25 and NodeLiveness(0.4).check_every() == 0.1


def test_reports_go_soon_after_a_change_and_every_heartbeat_regardless(clock):
    r = ReportSchedule(heartbeat_s=0.5, coalesce_s=0.05)
    assert r.due(clock())  # never reported: the first goes at once
    r.sent(clock())
    assert not r.due(clock()) and r.next_at() == clock() + 0.5
    assert r.changed(clock()) is True  # sooner than the next heartbeat
    assert r.changed(clock()) is False  # already coming
    assert r.next_at() == clock() + 0.05
    clock.advance(0.05)
    assert r.due(clock())
    r.sent(clock())
    clock.advance(0.5)
    assert r.due(clock())  # a heartbeat, nothing changed


def test_a_change_just_before_a_heartbeat_rides_on_it(clock):
    r = ReportSchedule(heartbeat_s=0.5, coalesce_s=0.05)
    r.sent(clock())
    clock.advance(0.48)
    assert r.changed(clock()) is False  # the heartbeat comes first
    assert r.next_at() == clock() + 0.02


def test_the_monitor_kills_retriable_newest_work_past_the_threshold(clock):
    mon = MemoryMonitor(threshold=0.9)
    busy = [Candidate(b"old", True, 1.0), Candidate(b"new", True, 2.0), Candidate(b"fixed", False, 3.0)]
    assert mon.check(clock(), 8 * GIB, 10 * GIB, lambda: busy, {b"old", b"new", b"fixed"}) is None
    kill = mon.check(clock(), 95 * GIB // 10, 10 * GIB, lambda: busy, {b"old", b"new", b"fixed"})
    assert kill.worker_id == b"new" and "memory_usage_threshold=0.9" in kill.reason


def test_the_monitor_waits_for_its_last_victim_to_die(clock):
    mon = MemoryMonitor(threshold=0.5)
    busy = [Candidate(b"a", True, 1.0), Candidate(b"b", True, 2.0)]
    alive = {b"a", b"b"}
    assert mon.check(clock(), 9, 10, lambda: busy, alive).worker_id == b"b"
    clock.advance(1.0)
    assert mon.check(clock(), 9, 10, lambda: busy, alive) is None  # b is still dying
    alive.discard(b"b")
    assert mon.check(clock(), 9, 10, lambda: busy[:1], alive).worker_id == b"a"
    clock.advance(KILL_GRACE_S)
    assert mon.check(clock(), 9, 10, lambda: busy[:1], alive).worker_id == b"a"  # a did not die: again


def test_the_monitor_asks_for_candidates_only_when_over_the_threshold(clock):
    def boom():
        raise AssertionError("asked for candidates under the threshold")

    assert MemoryMonitor(0.9).check(clock(), 1, 10, boom, set()) is None
