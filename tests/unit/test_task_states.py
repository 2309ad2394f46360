"""The head's task states folded from processes' batches: no processes."""

from __future__ import annotations

import pytest

from manta._private.control import task_states as ts
from manta._private.protocol import messages as m
from manta._private.runtime import story
from manta._private.runtime.story import Rec, TaskLog

T1, T2 = b"\x01" * 16, b"\x02" * 16
ACTOR = b"a" * 16
NODE, WORKER = b"n" * 16, b"w" * 16


def batch(records=(), running=(), lost=0):
    return m.TaskEvents(
        records=list(records), running=list(running), wall=1000.0, node_id=NODE, worker_id=WORKER, pid=42, lost=lost,
    )


def running(task_id, attempt=0, name="f", actor_id=None):
    return m.RunningTask(task_id, attempt, name, 1, actor_id, False, 5.0)


def state(store, task_id):
    return store.tasks[task_id].view()


def test_a_task_goes_pending_submitted_running_finished():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1))]))
    assert state(store, T1)["state"] == ts.PENDING_NODE_ASSIGNMENT
    store.fold(batch([Rec(T1, story.PUSHED, 2, 2.0, WORKER)]))
    assert state(store, T1)["state"] == ts.SUBMITTED_TO_WORKER
    store.fold(batch(running=[running(T1)]))
    view = state(store, T1)
    assert (view["state"], view["worker_pid"], view["node_id"]) == (ts.RUNNING, 42, NODE.hex())
    assert view["start_time_ms"] == 1_005_000 and view["creation_time_ms"] == 1_001_000
    store.fold(batch([Rec(T1, story.FINISHED, 3, 9.0)]))
    view = state(store, T1)
    assert (view["state"], view["end_time_ms"], view["job_id"]) == (ts.FINISHED, 1_009_000, "01000000")


def test_a_late_running_report_never_undoes_an_end():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.FINISHED, 2, 2.0)]))
    store.fold(batch(running=[running(T1)]))
    assert state(store, T1)["state"] == ts.FINISHED
    # Nor does the owner's "pushed" arriving after the worker's "running".
    store.fold(batch(running=[running(T2)]))
    store.fold(batch([Rec(T2, story.SUBMITTED, 1, 1.0, ("g", 1)), Rec(T2, story.PUSHED, 2, 2.0, WORKER)]))
    assert state(store, T2)["state"] == ts.RUNNING and state(store, T2)["name"] == "f"


def test_a_retry_starts_the_next_attempt_and_old_reports_are_ignored():
    store = ts.TaskStates(100)
    store.fold(batch([
        Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.PUSHED, 1, 1.0, WORKER),
        Rec(T1, story.RETRIED, 2, 2.0, "its worker died"),
    ]))
    view = state(store, T1)
    assert (view["attempt_number"], view["state"]) == (1, ts.PENDING_NODE_ASSIGNMENT)
    store.fold(batch(running=[running(T1, attempt=0)]))
    assert state(store, T1)["state"] == ts.PENDING_NODE_ASSIGNMENT
    store.fold(batch(running=[running(T1, attempt=1)]))
    assert state(store, T1)["state"] == ts.RUNNING


def test_failures_carry_rays_error_types():
    store = ts.TaskStates(100)
    store.fold(batch([
        Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.FAILED, 2, 2.0, "it raised"),
        Rec(T2, story.SUBMITTED, 1, 1.0, ("g", 1)), Rec(T2, story.CANCELLED, 2, 2.0),
    ]))
    assert state(store, T1)["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert (state(store, T2)["state"], state(store, T2)["error_type"]) == (ts.FAILED, "TASK_CANCELLED")


def test_actor_calls_queued_at_the_actor_wait_for_ordering():
    store = ts.TaskStates(100)
    store.fold(batch([
        Rec(T1, story.SUBMITTED_PUSHED, 1, 1.0, (ACTOR, 3, "A.f", 1)),
        Rec(T2, story.SUBMITTED, 2, 1.0, (ACTOR, "A.g", 1)),
    ]))
    view = state(store, T1)
    assert (view["state"], view["type"], view["actor_id"], view["name"]) == (
        ts.PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY, ts.ACTOR_TASK, ACTOR.hex(), "A.f")
    assert state(store, T2)["state"] == ts.PENDING_ARGS_AVAIL
    store.fold(batch([Rec(T2, story.PUSHED, 3, 2.0, 3)]))
    assert state(store, T2)["state"] == ts.PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY


def test_the_store_drops_the_oldest_and_counts_them():
    store = ts.TaskStates(2)
    ids = [bytes([i]) * 16 for i in range(5)]
    store.fold(batch([Rec(t, story.SUBMITTED, 1, 1.0, ("f", 1)) for t in ids], lost=3))
    assert list(store.tasks) == ids[-2:]
    assert store.dropped == 3 + 3


def test_queries_filter_on_ray_fields_and_refuse_unknown_ones():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T2, story.SUBMITTED, 1, 1.0, ("g", 1))]))
    found, total = store.query([("NAME", "=", "F")], 10)
    assert [t["task_id"] for t in found] == [T1.hex()] and total == 1
    found, total = store.query([("name", "!=", "f")], 10)
    assert [t["name"] for t in found] == ["g"]
    found, total = store.query([], 1)
    assert len(found) == 1 and total == 2
    with pytest.raises(ValueError, match="not a task field"):
        store.query([("colour", "=", "x")], 10)
    with pytest.raises(ValueError, match="predicate"):
        store.query([("name", "~", "x")], 10)


def test_the_log_hands_out_each_record_once_and_says_when_it_turned_over(clock):
    log = TaskLog(clock, maxlen=4)
    assert log.take_new() == ([], 0)
    log.record(T1, story.SUBMITTED, 1)
    log.record(T1, story.FINISHED, 2)
    first, lost = log.take_new()
    assert [r.step for r in first] == [story.SUBMITTED, story.FINISHED] and lost == 0
    assert log.take_new() == ([], 0)
    log.record(T2, story.SUBMITTED, 3)
    assert [r.task_id for r in log.take_new()[0]] == [T2]
    for i in range(6):  # more than the ring holds
        log.record(T2, story.RETRIED, 4 + i)
    again, lost = log.take_new()
    assert len(again) == 4 and lost == 1


def test_batches_wait_unfolded_until_asked_or_until_capacity_records_wait():
    store = ts.TaskStates(3)
    store.add(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1))]))
    assert store.tasks == {}  # nothing spent on it yet
    assert [t["name"] for t in store.query([], 10)[0]] == ["f"]
    store.add(batch([Rec(t, story.SUBMITTED, 1, 1.0, ("g", 1)) for t in (b"\x03" * 16, b"\x04" * 16)]))
    store.add(batch([Rec(T2, story.SUBMITTED, 1, 1.0, ("h", 1)), Rec(T2, story.FINISHED, 2, 2.0)]))
    assert len(store.tasks) == 3  # past capacity: folded (and the oldest dropped)


def test_a_malformed_batch_is_dropped_and_the_rest_kept():
    store = ts.TaskStates(100)
    store.add(batch([Rec(T1, story.SUBMITTED, 1, 1.0, 7)]))  # no (name, job)
    store.add(batch([Rec(T2, story.SUBMITTED, 1, 1.0, ("g", 1))]))
    assert [t["name"] for t in store.query([], 10)[0]] == ["g"]


def test_ended_attempts_are_counted_once_and_counts_group_by_state_name_and_retry():
    store = ts.TaskStates(2)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.FAILED, 2, 2.0, "ValueError"),
                      Rec(T1, story.FAILED, 3, 2.5, "ValueError")]))  # said twice: one failure
    store.fold(batch([Rec(T1, story.RETRIED, 4, 3.0, "retry"), Rec(T1, story.FINISHED, 5, 4.0)]))
    store.fold(batch([Rec(T2, story.SUBMITTED, 1, 1.0, ("g", 1))]))
    assert (store.finished_total, store.failed_total) == (1, 1)
    assert store.counts() == {(ts.FINISHED, "f", True): 1, (ts.PENDING_NODE_ASSIGNMENT, "g", False): 1}
    # The table forgets its oldest past its capacity; the totals do not.
    store.fold(batch([Rec(b"\x03" * 16, story.SUBMITTED, 1, 1.0, ("h", 1)), Rec(b"\x03" * 16, story.FINISHED, 2, 2.0)]))
    assert store.finished_total == 2 and len(store.tasks) == 2
    store.record(ACTOR, "A.__init__", ts.ACTOR_CREATION_TASK, 1, ACTOR, ts.FINISHED, 5.0)
    assert store.finished_total == 3


def test_a_workers_failed_run_gives_the_error_text_and_its_start():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.FAILED, 2, 5.0, "it raised")]))
    store.fold(batch([Rec(T1, story.RAN_FAILED, 7, 4.0, [0, 3.0, "Traceback ...\nValueError: boom"])]))
    s = state(store, T1)
    assert (s["state"], s["error_message"]) == ("FAILED", "Traceback ...\nValueError: boom")
    assert s["start_time_ms"] is not None and s["worker_pid"]


def test_a_failed_run_reported_before_its_submission_is_kept_until_it_comes():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.RAN_FAILED, 7, 4.0, [0, 3.0, "ValueError: boom"])]))
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.FAILED, 2, 5.0, "it raised")]))
    assert state(store, T1)["error_message"] == "ValueError: boom"


def test_an_earlier_attempts_failed_run_or_an_odd_record_leaves_no_error_text():
    store = ts.TaskStates(100)
    store.fold(batch([Rec(T1, story.SUBMITTED, 1, 1.0, ("f", 1)), Rec(T1, story.RETRIED, 2, 2.0, "x")]))
    store.fold(batch([Rec(T1, story.RAN_FAILED, 7, 4.0, [0, 3.0, "old"]),
                      Rec(T1, story.RAN_FAILED, 8, 4.0, [1, 3.0, 42])]))
    assert state(store, T1)["error_message"] is None
