"""The owner's lease client: exact commands for each event, no processes."""

from __future__ import annotations

import pytest

from manta import exceptions as exc
from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime import leasing as lc
from manta._private.runtime.story import Step, TaskLog
from manta._private.runtime.tasks import Task

_ids = ids.TaskIds()


def make_task(resources=None, retries=0, retry_exceptions=False, placement=None, name="f"):
    tid = _ids.next()
    spec = m.TaskSpec(
        task_id=tid, job_id=1, name=name, fn_id=b"f", args=[], kwarg_names=[], num_returns=1,
        owner="unix:/me", resources=resources if resources is not None else {"CPU": 1.0},
        placement=placement or m.Placement(),
    )
    t = Task(tid, spec, ids.return_ids(tid, 1), [], retries, retry_exceptions)
    t.resolved = True
    return t


def grant(lease_id, worker=b"w", node=b"n1", address="unix:/w"):
    return m.LeaseGranted(lease_id=lease_id, worker_id=worker, address=address, pid=1, node_id=node)


def done(task, error=None):
    return m.TaskDone(task_id=task.task_id, returns=[], error=error)


@pytest.fixture
def client(clock):
    return lc.LeaseClient(clock, TaskLog(clock), retry_error=lambda task, err: err == b"retry-me")


def leased(client, task, lease_id=1, **kw):
    """Submits `task` and gives it a connected lease; returns the lease."""
    (_, req) = client.submit(task)
    (connect,) = client.lease_granted(req.shape, lc.LOCAL, grant(lease_id, **kw))
    assert client.worker_connected(connect.lease) == [lc.PushTask(connect.lease, task)]
    return connect.lease


def test_first_task_asks_for_a_lease_and_runs_once_it_is_granted(client):
    t = make_task()
    cmds = client.submit(t)
    shape = t.shape
    assert cmds == [lc.NewShape(shape, "f"), lc.RequestLease(shape, lc.LOCAL, False, lc.LOCAL)]
    (connect,) = client.lease_granted(shape, lc.LOCAL, grant(7))
    assert connect == lc.ConnectWorker(connect.lease) and connect.lease.lease_id == 7
    assert client.worker_connected(connect.lease) == [lc.PushTask(connect.lease, t)]
    steps = [r.step for r in client.log.story(t.task_id)]
    assert steps == [Step.LEASE_REQUESTED, Step.GRANTED, Step.PUSHED]


def test_a_finished_lease_takes_the_next_task_of_its_shape(client, clock):
    a, b = make_task(), make_task()
    lease = leased(client, a)
    reply = done(a)
    assert client.task_replied(lease, a, reply) == [lc.Finish(a, reply), lc.WakeAt(clock.now + lc.IDLE_S)]
    # The same shape again: the idle lease runs it, no new request.
    assert client.submit(b) == [lc.PushTask(lease, b)]


def test_an_idle_lease_goes_back_after_the_idle_time(client, clock):
    a = make_task()
    lease = leased(client, a)
    client.task_replied(lease, a, done(a))
    clock.advance(lc.IDLE_S / 2)
    assert client.tick() == [lc.WakeAt(lease.idle_since + lc.IDLE_S)]
    clock.advance(lc.IDLE_S / 2)
    assert client.tick() == [lc.ReturnLease(lease)]
    assert client.tick() == []


def test_a_lease_granted_after_the_burst_goes_straight_back(client):
    a = make_task()
    lease = leased(client, a)
    b = make_task()
    (req,) = client.submit(b)  # a is still running: b asks for a second lease
    client.task_replied(lease, a, done(a))  # ...and takes a's lease meanwhile
    (back,) = client.lease_granted(req.shape, lc.LOCAL, grant(2))
    assert back == lc.ReturnLease(back.lease) and back.lease.lease_id == 2


def test_another_shape_wanting_resources_takes_back_idle_leases_at_once(client):
    x = make_task({"CPU": 1.0, "x": 1.0})
    lease = leased(client, x)
    client.task_replied(lease, x, done(x))
    cpu = make_task({"CPU": 1.0})
    cmds = client.submit(cpu)
    assert cmds == [lc.NewShape(cpu.shape, "f"), lc.ReturnLease(lease), lc.RequestLease(cpu.shape, lc.LOCAL, False, lc.LOCAL)]


def test_idle_leases_of_shapes_with_other_resources_are_kept(client):
    gpu = make_task({"GPU": 1.0})
    lease = leased(client, gpu)
    client.task_replied(lease, gpu, done(gpu))
    other = make_task({"custom": 1.0})
    assert lc.ReturnLease(lease) not in client.submit(other)


def test_a_redirect_asks_the_named_node_and_stays_if_it_cannot_be_reached(client):
    t = make_task()
    (_, req) = client.submit(t)
    assert client.lease_redirected(req.shape, lc.LOCAL, b"n2", "tcp:10.0.0.2:1") == [
        lc.RequestLease(req.shape, "tcp:10.0.0.2:1", True, lc.LOCAL)
    ]
    assert client.redirect_unreachable(req.shape, lc.LOCAL) == [lc.RequestLease(req.shape, lc.LOCAL, True, lc.LOCAL)]
    client.node_died(b"n3")
    assert client.lease_redirected(req.shape, lc.LOCAL, b"n3", "tcp:10.0.0.3:1") == [
        lc.RequestLease(req.shape, lc.LOCAL, True, lc.LOCAL)
    ]


def test_a_remote_agent_lost_mid_request_means_asking_ours_again(client):
    t = make_task()
    (_, req) = client.submit(t)
    lost = ConnectionError("gone")
    assert client.lease_failed(req.shape, "tcp:10.0.0.2:1", lost, lost=True) == [
        lc.RequestLease(req.shape, lc.LOCAL, False, lc.LOCAL)
    ]


def test_a_refused_lease_fails_every_queued_task_of_the_shape(client):
    a, b = make_task(), make_task()
    (_, req) = client.submit(a)
    client.submit(b)
    err = exc.TaskUnschedulableError("no such node")
    assert client.lease_failed(req.shape, lc.LOCAL, err, lost=False) == [lc.Fail(a, err), lc.Fail(b, err)]


def test_a_task_too_large_to_send_fails_without_retry_and_its_lease_takes_the_next(client, clock):
    a, b = make_task(retries=3, retry_exceptions=True), make_task(retries=3, retry_exceptions=True)
    lease = leased(client, a)
    client.submit(b)  # queued behind a on the same shape
    error = ValueError("too large")
    assert client.push_refused(lease, a, error) == [lc.Fail(a, error), lc.PushTask(lease, b)]
    assert a.retries_left == 3 and Step.FAILED in [r.step for r in client.log.story(a.task_id)]


def test_a_dead_worker_means_a_retry_while_retries_last(client):
    t = make_task(retries=1)
    lease = leased(client, t)
    cmds = client.worker_lost(lease, t, ConnectionError("eof"), node_died=False)
    assert cmds == [lc.ReturnLease(lease, kill=True), lc.RequestLease(t.shape, lc.LOCAL, False, lc.LOCAL)]
    assert (t.retries_left, t.spec.attempt) == (0, 1)
    assert Step.RETRIED in [r.step for r in client.log.story(t.task_id)]


def test_unlimited_retries_stay_unlimited(client):
    t = make_task(retries=-1)
    lease = leased(client, t, lease_id=10)
    for i in range(3):
        client.worker_lost(lease, t, ConnectionError("eof"), node_died=False)
        (connect,) = client.lease_granted(t.shape, lc.LOCAL, grant(20 + i))
        client.worker_connected(connect.lease)
        lease = connect.lease
    assert (t.retries_left, t.spec.attempt) == (-1, 3)


def test_a_lost_task_without_retries_waits_for_the_agents_word_then_crashes(client, clock):
    t = make_task()
    lease = leased(client, t)
    assert client.worker_lost(lease, t, ConnectionError("eof"), node_died=False) == [
        lc.ReturnLease(lease, kill=True), lc.WakeAt(clock.now + lc.VERDICT_S)
    ]
    clock.advance(lc.VERDICT_S)
    (fail,) = client.tick()
    assert fail.task is t and isinstance(fail.error, exc.WorkerCrashedError)


def test_the_memory_monitors_word_makes_it_an_out_of_memory_error(client):
    t = make_task()
    lease = leased(client, t)
    client.worker_lost(lease, t, ConnectionError("eof"), node_died=False)
    (fail,) = client.lease_killed(lc.LOCAL, lease.lease_id, "node memory 97%")
    assert isinstance(fail.error, exc.OutOfMemoryError) and "node memory 97%" in str(fail.error)
    assert client.tick() == []  # nothing left to decide


def test_a_kill_note_that_arrives_first_is_kept_for_the_loss(client, clock):
    t = make_task()
    lease = leased(client, t)
    assert client.lease_killed(lc.LOCAL, lease.lease_id, "oom") == [lc.WakeAt(clock.now + lc.KILL_NOTE_S)]
    (_, fail) = client.worker_lost(lease, t, ConnectionError("eof"), node_died=False)
    assert isinstance(fail.error, exc.OutOfMemoryError)


def test_kill_notes_expire(client, clock):
    client.lease_killed(lc.LOCAL, 99, "oom")
    clock.advance(lc.KILL_NOTE_S)
    assert client.tick() == [] and client.kill_notes == {}


def test_a_task_on_a_dead_node_fails_with_node_died(client, clock):
    t = make_task()
    lease = leased(client, t)
    client.worker_lost(lease, t, ConnectionError("node gone"), node_died=True)
    clock.advance(lc.VERDICT_S)
    (fail,) = client.tick()
    assert isinstance(fail.error, exc.NodeDiedError)


def test_retry_exceptions_retry_only_the_errors_they_name(client):
    t = make_task(retries=2, retry_exceptions=True)
    lease = leased(client, t)
    assert client.task_replied(lease, t, done(t, b"retry-me")) == [lc.PushTask(lease, t)]
    assert t.retries_left == 1
    other = done(t, b"some other error")
    cmds = client.task_replied(lease, t, other)
    assert cmds[0] == lc.Finish(t, other)


def test_cancelling_a_queued_task_fails_it_and_a_running_one_is_told(client):
    a, b = make_task(), make_task()
    lease = leased(client, a)
    client.submit(b)
    b.cancelled = True
    (fail,) = client.cancel(b, force=False, recursive=True)
    assert fail.task is b and isinstance(fail.error, exc.TaskCancelledError)
    a.cancelled = True
    assert client.cancel(a, force=True, recursive=False) == [lc.CancelRunning(lease, a, True, False)]


def test_a_task_cancelled_before_it_was_resolved_fails_when_submitted(client):
    t = make_task()
    t.cancelled = True
    (fail,) = client.submit(t)
    assert isinstance(fail.error, exc.TaskCancelledError)


def test_the_fixture_validates_every_table(validate_tables, client):
    assert client in validate_tables


def test_a_lease_asked_back_goes_back_after_its_task_even_before_it_connected(client):
    a, b = make_task(), make_task()
    (_, req) = client.submit(a)
    client.submit(b)
    (connect, *_) = client.lease_granted(req.shape, lc.LOCAL, grant(3))
    lease = connect.lease
    assert client.lease_reclaimed(lc.LOCAL, 3) == []  # not connected yet: kept for later
    assert client.worker_connected(lease) == [lc.PushTask(lease, a)]
    # Its task done, it goes back rather than taking the next one of its shape.
    cmds = client.task_replied(lease, a, done(a))
    assert lc.ReturnLease(lease) in cmds and lc.PushTask(lease, b) not in cmds
    client.validate()


def test_an_idle_lease_asked_back_goes_back_at_once(client):
    a = make_task()
    lease = leased(client, a, lease_id=4)
    client.task_replied(lease, a, done(a))
    assert client.lease_reclaimed(lc.LOCAL, 4) == [lc.ReturnLease(lease)]
    client.validate()


def test_a_request_past_the_nodes_quota_is_dropped_while_others_are_out_and_fails_the_queue_when_last(client):
    a, b = make_task(), make_task()
    (_, req) = client.submit(a)
    assert client.submit(b)[-1] == req  # a second request for the second task
    assert req.shape.requests == 2
    err = exc.QuotaExceededError("job 1 would pass its quota max_pending_tasks=1")
    assert client.lease_failed(req.shape, lc.LOCAL, err, lost=False) == []
    assert req.shape.requests == 1 and list(req.shape.queue) == [a, b]
    assert client.lease_failed(req.shape, lc.LOCAL, err, lost=False) == [lc.Fail(a, err), lc.Fail(b, err)]


# -- pipelining ---------------------------------------------------------------


def _short_burst(client, clock, n, retries=3):
    """One task run in `clock` time 1 ms, then `n` more queued behind a second."""
    first = make_task(retries=retries)
    lease = leased(client, first)
    queued = [make_task(retries=retries) for _ in range(n)]
    for t in queued:
        client.submit(t)
    clock.advance(0.001)
    return lease, first, queued


def test_a_lease_of_a_short_shape_takes_tasks_up_to_the_depth(client, clock):
    lease, first, queued = _short_burst(client, clock, 200)
    cmds = client.task_replied(lease, first, done(first))
    pushed = [c.task for c in cmds if type(c) is lc.PushTask]
    # The next task runs at once; more wait on the worker behind it.
    assert pushed == queued[:lc.PIPELINE_DEPTH] and lease.tasks == queued[:lc.PIPELINE_DEPTH]
    assert lc.WakeAt(clock.now + lc.RECALL_S) in cmds
    assert list(first.shape.queue) == queued[lc.PIPELINE_DEPTH:]
    # Answers come in order; each frees a place that the queue fills.
    nxt = queued[0]
    cmds = client.task_replied(lease, nxt, done(nxt))
    assert [c.task for c in cmds if type(c) is lc.PushTask] == [queued[lc.PIPELINE_DEPTH]]


def test_a_long_task_stops_pipelining_and_many_short_ones_bring_it_back(client, clock):
    lease, first, queued = _short_burst(client, clock, 400)
    client.task_replied(lease, first, done(first))
    head = lease.tasks[0]
    clock.advance(0.05)  # 50 ms: far past PIPELINE_S
    cmds = client.task_replied(lease, head, done(head))
    assert [c for c in cmds if type(c) is lc.PushTask] == [] and len(lease.tasks) == lc.PIPELINE_DEPTH - 1
    assert first.shape.run_s == pytest.approx(0.05)
    while len(lease.tasks) > 1:  # the short ones left: no new ones pushed while the estimate falls
        clock.advance(0.0001)
        t = lease.tasks[0]
        client.task_replied(lease, t, done(t))
    assert first.shape.run_s > lc.PIPELINE_S
    for _ in range(40):
        clock.advance(0.0001)
        t = lease.tasks[0]
        client.task_replied(lease, t, done(t))
        if len(lease.tasks) > 1:
            break
    assert len(lease.tasks) > 1 and first.shape.run_s <= lc.PIPELINE_S


def test_a_small_burst_is_left_for_the_leases_on_their_way(client, clock):
    lease, first, queued = _short_burst(client, clock, 10)
    assert first.shape.requests == 10
    cmds = client.task_replied(lease, first, done(first))
    # Eleven tasks for this lease and ten asked for: one each, none lined up here.
    assert [c.task for c in cmds if type(c) is lc.PushTask] == queued[:1]


def test_tasks_without_retries_and_generators_are_not_pipelined(client, clock):
    lease, first, queued = _short_burst(client, clock, 3, retries=0)
    client.task_replied(lease, first, done(first))
    assert lease.tasks == queued[:1]  # the shape may not be run again: one at a time
    other = make_task(retries=3)
    gen = make_task(retries=3)
    gen.spec = m.TaskSpec(**{**{f: getattr(gen.spec, f) for f in gen.spec.__struct_fields__}, "num_returns": -1})
    lease2, first2, _ = _short_burst(client, clock, 0)
    second = make_task(retries=3)
    for t in (other, second, gen, *[make_task(retries=3) for _ in range(200)]):
        client.submit(t)
    client.task_replied(lease2, first2, done(first2))
    assert lease2.tasks == [other, second]  # stops at the generator, which keeps its place
    assert list(first2.shape.queue)[0] is gen


def test_a_task_behind_a_stalled_one_is_asked_back_and_goes_to_another_lease(client, clock, validate_tables):
    lease, first, queued = _short_burst(client, clock, 200)
    client.task_replied(lease, first, done(first))
    head, behind = lease.tasks[0], lease.tasks[1:]
    clock.advance(lc.RECALL_S / 2)
    assert [c for c in client.tick() if type(c) is lc.Recall] == []
    clock.advance(lc.RECALL_S / 2)
    recalls = [c for c in client.tick() if type(c) is lc.Recall]
    assert recalls == [lc.Recall(lease, t) for t in reversed(behind)]
    assert [c for c in client.tick() if type(c) is lc.Recall] == []  # asked once
    # The worker gives the last one back: it queues first, for the next lease
    # (the burst's requests for more are still out).
    last = behind[-1]
    cmds = client.task_replied(lease, last, m.TaskDone(task_id=last.task_id, returns=[], recalled=True))
    assert cmds == [] and first.shape.requests > 0
    assert first.shape.queue[0] is last and last.lease is None and last.spec.attempt == 0
    assert not last.recalled and last.retries_left == 3
    (connect,) = client.lease_granted(first.shape, lc.LOCAL, grant(2))
    assert connect == lc.ConnectWorker(connect.lease)
    assert client.worker_connected(connect.lease)[0] == lc.PushTask(connect.lease, last)
    # One had started before its recall came: it answers as usual, in order.
    client.task_replied(lease, head, done(head))
    cmds = client.task_replied(lease, behind[0], done(behind[0]))
    assert lc.Finish(behind[0], done(behind[0])) in cmds


def test_a_task_given_back_unasked_fails_instead_of_bouncing(client, clock):
    lease, first, queued = _short_burst(client, clock, 200)
    client.task_replied(lease, first, done(first))
    behind = lease.tasks[1]
    cmds = client.task_replied(lease, behind, m.TaskDone(task_id=behind.task_id, returns=[], recalled=True))
    (fail,) = [c for c in cmds if type(c) is lc.Fail]
    assert fail.task is behind and "gave it back unasked" in str(fail.error)
    assert behind not in first.shape.queue


def test_a_recalled_task_that_was_cancelled_meanwhile_fails_as_cancelled(client, clock):
    lease, first, queued = _short_burst(client, clock, 200)
    client.task_replied(lease, first, done(first))
    behind = lease.tasks[1]
    behind.recalled = True  # asked back (Recall sent)...
    behind.cancelled = True  # ...and cancelled by the user before the answer came
    client.cancel(behind, force=False, recursive=False)
    (fail, *_) = client.task_replied(lease, behind, m.TaskDone(task_id=behind.task_id, returns=[], recalled=True))
    assert fail == lc.Fail(behind, fail.error) and isinstance(fail.error, exc.TaskCancelledError)


def test_a_dead_worker_returns_its_lease_once_and_every_task_on_it_runs_again(client, clock, validate_tables):
    # Only the one that ran spends an attempt: those behind it had not started.
    lease, first, queued = _short_burst(client, clock, 200)
    client.task_replied(lease, first, done(first))
    on_it = list(lease.tasks)
    assert len(on_it) == lc.PIPELINE_DEPTH
    out = []
    for t in on_it:
        out += client.worker_lost(lease, t, ConnectionError("eof"), node_died=False)
    assert out.count(lc.ReturnLease(lease, kill=True)) == 1
    assert [t.spec.attempt for t in on_it] == [1] + [0] * (len(on_it) - 1) and not lease.tasks
    assert [t.retries_left for t in on_it] == [2] + [3] * (len(on_it) - 1)
    assert set(on_it) <= set(first.shape.queue)
    assert lease not in first.shape.busy


def test_a_recalled_task_cancelled_after_the_one_before_it_ended_frees_its_lease(client, clock, validate_tables):
    lease, first, queued = _short_burst(client, clock, 200)
    client.task_replied(lease, first, done(first))
    head, behind = lease.tasks[0], lease.tasks[1:]
    clock.advance(lc.RECALL_S)
    client.tick()  # all behind the head asked back
    assert all(t.recalled for t in behind)
    client.task_replied(lease, head, done(head))  # the head ends before the answers to the recall
    assert lease.tasks == behind
    for t in reversed(behind[1:]):  # answered in the order asked: last first
        client.task_replied(lease, t, m.TaskDone(task_id=t.task_id, returns=[], recalled=True))
    assert list(first.shape.queue)[:len(behind) - 1] == behind[1:]  # back in their order
    last = behind[0]
    last.cancelled = True
    client.cancel(last, force=False, recursive=False)
    cmds = client.task_replied(lease, last, m.TaskDone(task_id=last.task_id, returns=[], recalled=True))
    # The lease, empty now, takes the queue's next task at once (validate_tables
    # checks no idle lease sits next to queued tasks).
    assert lc.Fail(last, cmds[0].error) == cmds[0] and isinstance(cmds[0].error, exc.TaskCancelledError)
    assert lease.tasks and lease.tasks[0] is behind[1]


def test_nothing_is_pipelined_behind_a_generator(client, clock):
    lease, first, queued = _short_burst(client, clock, 0)
    gen = make_task(retries=3)
    gen.spec = m.TaskSpec(**{**{f: getattr(gen.spec, f) for f in gen.spec.__struct_fields__}, "num_returns": -1})
    for t in (gen, *[make_task(retries=3) for _ in range(200)]):
        client.submit(t)
    client.task_replied(lease, first, done(first))
    assert lease.tasks == [gen]
