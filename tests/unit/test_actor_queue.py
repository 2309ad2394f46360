"""One caller's queue of calls to an actor: exact commands, no processes."""

from __future__ import annotations

import random

import pytest
from msgspec.structs import replace as msgspec_replace

from manta import exceptions as exc
from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime import actor_queue as aq
from manta._private.runtime.story import Step, TaskLog
from manta._private.runtime.tasks import Task

_ids = ids.TaskIds()
ACTOR = b"a" * 16


def call(retries=0, resolved=True):
    tid = _ids.next()
    spec = m.TaskSpec(
        task_id=tid, job_id=1, name="A.f", fn_id=b"", args=[], kwarg_names=[], num_returns=1,
        owner="unix:/me", resources={}, actor_id=ACTOR, method="f",
    )
    t = Task(tid, spec, ids.return_ids(tid, 1), [], retries)
    t.resolved = resolved
    return t


def alive(epoch, address="unix:/actor"):
    return m.ActorState(
        actor_id=ACTOR, state=m.ActorStatus.ALIVE, address=address, epoch=epoch, death_cause="",
        class_name="A", fn_id=b"", node_id=b"n",
    )


def dead(cause="killed"):
    return m.ActorState(
        actor_id=ACTOR, state=m.ActorStatus.DEAD, address="", epoch=0, death_cause=cause,
        class_name="A", fn_id=b"",
    )


@pytest.fixture
def queue(clock):
    return aq.ActorQueue(ACTOR, TaskLog(clock))


def connect(queue, epoch=1):
    assert queue.located(alive(epoch)) == [aq.Connect("unix:/actor", b"n")]
    return queue.connected()


def test_the_first_call_locates_the_actor_and_goes_once_connected(queue):
    t = call()
    assert queue.submit(t) == [aq.Locate(0)]
    assert connect(queue) == [aq.Push(t, 1)]
    steps = [r.step for r in queue.log.story(t.task_id)]
    assert steps == [Step.SUBMITTED, Step.PUSHED]


def test_calls_on_a_live_link_go_straight_out_in_order(queue):
    queue.submit(call())
    connect(queue)
    calls = [call() for _ in range(3)]
    assert [queue.submit(t) for t in calls] == [[aq.Push(t, 1)] for t in calls]
    assert [t.seq for t in calls] == [2, 3, 4]
    assert queue.idle() is False


def test_try_push_sends_a_call_only_when_nothing_is_ahead_of_it(queue):
    first = call()
    assert queue.try_push(first) is None  # not connected yet: nothing changes
    assert first.seq == 0 and not queue.busy()
    queue.submit(first)
    connect(queue)
    assert queue.try_push(second := call()) is None  # the first is in flight
    queue.replied(first, errored=False)
    record = queue.try_push(second)
    assert record is not None
    queue.log.append(record)  # the caller's, once the call is written
    assert second.seq == 2 and queue.inflight == {2: (second, 1)}
    # One record, read back as both steps at one stimulus.
    story = queue.log.story(second.task_id)
    assert [r.step for r in story] == [Step.SUBMITTED, Step.PUSHED]
    assert story[0].stimulus_id == story[1].stimulus_id
    assert story[0].detail == ACTOR.hex() and story[1].detail == "1"


def test_a_call_waits_for_its_arguments_and_holds_back_later_ones(queue):
    queue.submit(call())
    connect(queue)
    waiting, later = call(resolved=False), call()
    assert queue.submit(waiting) == []
    assert queue.submit(later) == []  # order: it may not overtake
    waiting.resolved = True
    assert queue.resolved(waiting) == [aq.Push(waiting, 1), aq.Push(later, 1)]


def test_a_call_whose_argument_failed_leaves_the_queue(queue):
    queue.submit(call())
    connect(queue)
    failed, later = call(resolved=False), call()
    queue.submit(failed)
    queue.submit(later)
    failed.done = True  # the runtime failed it with its argument's error
    assert queue.resolved(failed) == [aq.Push(later, 1)]


def test_a_reply_finishes_the_call(queue):
    t = call()
    queue.submit(t)
    connect(queue)
    assert queue.replied(t, errored=False) is False
    assert queue.idle()


def test_a_dead_actor_fails_queued_and_new_calls(queue):
    t = call()
    queue.submit(t)
    (fail,) = queue.located(dead("out of restarts"))
    assert fail.task is t and isinstance(fail.error, exc.ActorDiedError)
    assert "out of restarts" in str(fail.error)
    (fail,) = queue.submit(call())
    assert isinstance(fail.error, exc.ActorDiedError)


def test_an_unreachable_address_means_asking_the_head_again(queue):
    queue.submit(call())
    queue.located(alive(1))
    assert queue.connect_failed() == [aq.Locate(1)]


def test_a_lost_call_with_retries_runs_again_at_the_next_epoch(queue):
    t = call(retries=-1)
    queue.submit(t)
    connect(queue)
    assert queue.lost(t, ConnectionError("eof"), link_broken=True) == [aq.Locate(1)]
    assert connect(queue, epoch=2) == [aq.Push(t, 2)]
    assert t.spec.attempt == 1


def test_a_lost_call_without_retries_asks_the_head_what_became_of_the_actor(queue):
    t = call()
    queue.submit(t)
    connect(queue)
    err = ConnectionError("eof")
    assert queue.lost(t, err, link_broken=True) == [aq.AskFate(t, 1, err)]


def test_fate_is_unavailable_while_restarting_and_died_when_dead(queue):
    t = call()
    assert isinstance(aq.fate_error(t, ACTOR, ConnectionError("x"), alive(2)), exc.ActorUnavailableError)
    died = aq.fate_error(t, ACTOR, ConnectionError("x"), dead("oom"))
    assert isinstance(died, exc.ActorDiedError) and "oom" in str(died)


def test_300_calls_lost_to_restarts_still_run_in_submission_order(queue):
    """Retried calls go back in submission order however their losses arrive
    (the old runtime sorted them by a little-endian counter: call 256 went
    before call 1)."""
    calls = [call(retries=-1) for _ in range(300)]
    queue.submit(calls[0])
    pushed = [c.task for c in connect(queue)]
    for t in calls[1:]:
        pushed += [c.task for c in queue.submit(t)]
    assert pushed == calls
    rng = random.Random(7)
    epoch = 1
    for _ in range(3):  # the actor restarts three times, losing everything in flight
        inflight = [t for t, _ in queue.inflight.values()]
        rng.shuffle(inflight)
        for i, t in enumerate(inflight):
            cmds = queue.lost(t, ConnectionError("restart"), link_broken=True)
            assert cmds == ([aq.Locate(epoch)] if i == 0 else [])
        epoch += 1
        pushed = [c.task for c in connect(queue, epoch)]
        assert pushed == calls
    for t in calls:
        queue.replied(t, errored=False)
    assert queue.idle()


def test_cancel_removes_a_queued_call_and_asks_the_actor_about_a_running_one(queue):
    running, queued = call(), call(resolved=False)
    queue.submit(running)
    connect(queue)
    queue.submit(queued)
    (fail,) = queue.cancel(queued, recursive=True)
    assert isinstance(fail.error, exc.TaskCancelledError)
    assert queue.cancel(running, recursive=False) == [aq.SendCancel(running, False)]


def test_release_waits_until_no_call_needs_the_actor(queue):
    t = call()
    queue.submit(t)
    connect(queue)
    assert queue.release() == []
    assert queue.replied(t, errored=False) is True
    assert queue.release() == [aq.Release()]


def test_an_impossible_transition_is_a_bug(queue):
    with pytest.raises(aq.IllegalTransition):
        queue.connected()


def test_a_call_that_could_not_be_written_waits_for_the_restarted_actor_without_a_retry(queue):
    """The actor's worker died while nothing was in flight: the next call
    finds the link closed and is never sent. It cannot have run, so it goes
    to the actor's next incarnation even with no retries."""
    queue.submit(first := call())
    connect(queue)
    queue.replied(first, errored=False)
    t = call(retries=0)
    assert queue.submit(t) == [aq.Push(t, 1)]
    assert queue.unsent(t) == [aq.Locate(1)]
    assert t.retries_left == 0 and t.spec.attempt == 0 and list(queue.pending) == [t]
    assert queue.located(alive(2)) == [aq.Connect("unix:/actor", b"n")]
    assert queue.connected() == [aq.Push(t, 2)]


def test_a_cancelled_call_that_could_not_be_written_fails_as_cancelled(queue):
    queue.submit(first := call())
    connect(queue)
    queue.replied(first, errored=False)
    t = call()
    queue.submit(t)
    t.cancelled = True
    out = queue.unsent(t)
    assert [type(c) for c in out] == [aq.Fail]  # and no need to find the actor
    assert isinstance(out[0].error, exc.TaskCancelledError)


def grouped(group, resolved=True):
    t = call(resolved=resolved)
    t.spec = m.TaskSpec(**{**{f: getattr(t.spec, f) for f in t.spec.__struct_fields__}, "concurrency_group": group})
    return t


def test_a_waiting_call_holds_back_only_its_own_concurrency_group(queue):
    queue.submit(call())
    connect(queue)
    waiting, same, other = grouped("a", resolved=False), grouped("a"), grouped("b")
    assert queue.submit(waiting) == []
    assert queue.submit(same) == []
    assert queue.submit(other) == [aq.Push(other, 1)]
    assert list(queue.pending) == [waiting, same]
    waiting.resolved = True
    assert queue.resolved(waiting) == [aq.Push(waiting, 1), aq.Push(same, 1)]


def test_an_out_of_order_actor_takes_any_ready_call(clock):
    queue = aq.ActorQueue(ACTOR, TaskLog(clock))
    queue.submit(first := call())
    assert queue.located(msgspec_replace(alive(1), out_of_order=True)) == [aq.Connect("unix:/actor", b"n")]
    assert queue.connected() == [aq.Push(first, 1)]
    waiting, ready = call(resolved=False), call()
    assert queue.submit(waiting) == []
    assert queue.submit(ready) == [aq.Push(ready, 1)]
    assert list(queue.pending) == [waiting]


def test_a_call_retried_for_its_exception_goes_before_a_later_call_waiting_for_it(queue):
    # `two` waits for `one`'s result; `one` raised and goes again: behind
    # `two` it would never run.
    one, two = call(retries=1), call(resolved=False)
    queue.submit(one)
    connect(queue)
    queue.submit(two)
    queue.replied(one, errored=True)
    one.next_attempt()
    assert queue.retry(one) == [aq.Push(one, 1)]
    two.resolved = True
    assert queue.resolved(two) == [aq.Push(two, 1)]
    queue.validate()
