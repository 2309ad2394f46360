"""The task log: records kept raw and cheap, read back as steps."""

from __future__ import annotations

from manta._private.runtime import story
from manta._private.runtime.story import Rec, Step, TaskLog


def test_pair_records_read_back_as_two_steps_in_time_order(clock):
    log = TaskLog(clock)
    tid = b"t" * 16
    clock.advance(1.0)
    pushed = Rec(tid, story.SUBMITTED_PUSHED, log.stimulus(), log.clock(), (b"\x01" * 16, 3))
    clock.advance(1.0)
    # The answer is recorded before the caller appends its push record.
    log.append(Rec(tid, story.FINISHED, log.stimulus(), log.clock()))
    log.append(pushed)
    log.append(Rec(b"u" * 16, story.RAN_FAILED, log.stimulus(), 5.0, (2, 4.0)))
    steps = [(r.step, r.time, r.detail) for r in log.story(tid)]
    assert steps == [
        (Step.SUBMITTED, 1001.0, "01" * 16),
        (Step.PUSHED, 1001.0, "3"),
        (Step.FINISHED, 1002.0, ""),
    ]
    other = [(r.step, r.time, r.detail) for r in log.story(b"u" * 16)]
    assert other == [(Step.RUNNING, 4.0, "2"), (Step.FAILED, 5.0, "")]


def test_the_log_is_bounded():
    log = TaskLog(maxlen=3)
    for i in range(5):
        log.record(bytes([i]) * 16, story.SUBMITTED, log.stimulus())
    assert len(log) == 3
    assert log.story(b"\x00" * 16) == []
