"""A simulated node's answers (sim/node.py): leases, bundles and tasks, without I/O."""

from __future__ import annotations

import itertools
import pickle

import pytest

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.runtime.serialization import deserialize, plain_value, serialize
from manta._private.scheduling.bundles import bundle_resources, bundles_resources
from manta._private.sim.fleet import DROPPED, ViewCount, may_push
from manta._private.sim.node import (
    CHANGED,
    MAX_DURATION_S,
    Reply,
    ReplyError,
    Send,
    SimNode,
    duration_of,
    task_done,
)

NODE = b"n" * 16
PG = b"p" * 16
TASK_IDS = (i.to_bytes(ids.TASK_ID_SIZE, "little") for i in itertools.count(1))


def node(cpus: float = 2, duration: float = 0.5) -> SimNode:
    return SimNode(NODE, "tcp:127.0.0.1:1", {"CPU": cpus}, duration)


def lease(cpus: float = 1, job: int = 1, **kw: object) -> m.RequestLease:
    return m.RequestLease(job_id=job, resources={"CPU": cpus}, env_vars={}, spilled=True, **kw)  # type: ignore[arg-type]


def spec(*args: object, kwargs: tuple[str, ...] = (), num_returns: int = 1, **kw: object) -> m.TaskSpec:
    return m.TaskSpec(
        task_id=next(TASK_IDS), job_id=1, name="f", fn_id=b"f",
        args=[m.Arg(data=serialize(a).to_bytes()) for a in args], kwarg_names=list(kwargs), num_returns=num_returns,
        owner="tcp:127.0.0.1:2", resources={"CPU": 1}, **kw,  # type: ignore[arg-type]
    )


def replies(out: list[object]) -> list[Reply]:
    return [c for c in out if isinstance(c, Reply)]


def test_a_lease_is_granted_at_once_with_the_nodes_address_and_its_resources_taken():
    n = node()
    out = n.handle("owner", lease())
    (r,) = replies(out)
    assert isinstance(r.msg, m.LeaseGranted) and r.to == "owner"
    assert r.msg.address == "tcp:127.0.0.1:1" and r.msg.node_id == NODE
    assert CHANGED in out
    assert n.report().available == {"CPU": 1.0}
    assert n.granted == {r.msg.lease_id: "owner"}


def test_requests_beyond_the_nodes_cpus_wait_for_a_returned_lease():
    n = node(cpus=1)
    (first,) = replies(n.handle("a", lease()))
    assert replies(n.handle("b", lease())) == []
    assert n.report().pending == [({"CPU": 1.0}, 1)]
    out = n.handle("a", m.ReturnLease(lease_id=first.msg.lease_id))
    (second,) = replies(out)
    assert second.to == "b" and isinstance(second.msg, m.LeaseGranted)


def test_an_owner_gone_frees_its_leases_and_drops_its_waiting_requests():
    n = node(cpus=1)
    n.handle("a", lease())
    n.handle("a", lease())
    n.owner_gone("a")
    assert n.pending == {} and n.granted == {}
    assert n.report().available == {"CPU": 1.0}


def test_a_returned_lease_not_granted_here_changes_nothing():
    n = node()
    assert n.handle("a", m.ReturnLease(lease_id=99)) == []


def test_a_pushed_task_is_answered_after_its_duration_with_the_nodes_id():
    n = node(duration=0.5)
    push = m.PushTask(spec=spec(0.25))
    (r,) = n.handle("owner", push)
    assert r.after == 0.25 and r.request is push
    assert isinstance(r.msg, m.TaskDone) and r.msg.task_id == push.spec.task_id
    value, is_error = deserialize(r.msg.returns[0].data)
    assert value == NODE.hex() and not is_error
    assert r.msg.returns[0].object_id == ids.object_id(push.spec.task_id, 1)
    assert n.tasks_done == 1


def test_an_owner_runs_as_many_tasks_at_once_as_it_holds_leases_and_the_rest_after(clock):
    n = SimNode(NODE, "tcp:127.0.0.1:1", {"CPU": 2}, 0.5, clock=clock)
    n.handle("owner", lease())
    n.handle("owner", lease())
    assert len(n.granted) == 2
    # Four pushed at once, two leases: two run now, two wait behind them (pipelined).
    afters = [n.handle("owner", m.PushTask(spec=spec(0.25)))[0].after for _ in range(4)]
    assert afters == [0.25, 0.25, 0.5, 0.5]
    clock.advance(0.3)  # the first two ended: the next one starts when the third ends
    (r,) = n.handle("owner", m.PushTask(spec=spec(0.1)))
    assert r.after == pytest.approx(0.3)
    (r,) = n.handle("other", m.PushTask(spec=spec(0.1)))  # another owner's tasks do not wait on these
    assert r.after == pytest.approx(0.1)


@pytest.mark.parametrize("args,kwargs,expected", [
    ((), (), 0.5),  # no argument: the node's default
    ((0.1,), (), 0.1),
    ((2,), (), 2.0),
    ((True,), (), 0.5),  # a flag is not a duration
    (("slow",), (), 0.5),
    ((-1.0,), (), 0.5),
    ((MAX_DURATION_S * 2,), (), 0.5),
    ((0.3,), ("duration",), 0.3),  # f.remote(duration=0.3)
    ((1, 0.3), ("x",), 1.0),  # the first positional one wins
])
def test_the_duration_is_the_first_plain_number_given(args, kwargs, expected):
    assert duration_of(spec(*args, kwargs=kwargs), 0.5) == expected


def test_an_argument_that_needs_a_class_is_never_unpickled():
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    data = serialize(Evil()).to_bytes()
    with pytest.raises(ValueError):
        plain_value(data)
    assert duration_of(spec(), 0.5) == 0.5
    assert plain_value(serialize([1, "a", {"b": 2.0}]).to_bytes()) == [1, "a", {"b": 2.0}]
    with pytest.raises(ValueError):
        plain_value(b"garbage")
    with pytest.raises(ValueError):
        plain_value(pickle.dumps(1))


def test_an_actor_creation_returns_nothing_at_once_and_generators_are_refused():
    created = task_done(spec(actor_creation=True, actor_id=b"a" * 16), NODE)
    assert created.returns == [] and created.error is None
    assert duration_of(spec(5.0, actor_creation=True), 0.5) == 0.0
    gen = task_done(spec(num_returns=m.STREAMING), NODE)
    assert gen.error is not None and "generator" in gen.error_text
    three = task_done(spec(num_returns=3), NODE)
    assert [r.object_id for r in three.returns] == ids.return_ids(three.task_id, 3)


def test_bundles_are_reserved_committed_and_cancelled_as_the_agent_does():
    n = node(cpus=4)
    bundles = [(0, {"CPU": 1.0}), (1, {"CPU": 2.0})]
    prep = m.PrepareBundles(pg_id=PG, bundles=bundles)
    out = n.handle("head", prep)
    assert isinstance(replies(out)[0].msg, m.Ack)
    assert n.report().available == {"CPU": 1.0}
    again = n.handle("head", m.PrepareBundles(pg_id=PG, bundles=[(1, {"CPU": 1.0})]))
    assert isinstance(again[0], ReplyError)  # that index is held already
    out = n.handle("head", m.CommitBundles(pg_id=PG))
    assert isinstance(replies(out)[-1].msg, m.Ack)
    name = f"CPU_group_{PG.hex()}"
    assert n.report().total[name] == 3.0
    (granted,) = replies(n.handle("owner", m.RequestLease(job_id=1, resources={name: 1.0}, env_vars={}, spilled=True)))
    assert isinstance(granted.msg, m.LeaseGranted)
    n.handle("owner", m.ReturnLease(lease_id=granted.msg.lease_id))
    n.handle("head", m.CancelBundles(pg_id=PG))
    assert n.holds == {} and n.report().total == {"CPU": 4.0} and n.report().available == {"CPU": 4.0}
    assert isinstance(n.handle("head", m.CommitBundles(pg_id=PG))[0], ReplyError)


def test_bundles_resources_sums_each_bundles_names():
    both = bundles_resources(PG, [(0, {"CPU": 1.0}), (1, {"CPU": 2.0})])
    assert both[f"CPU_group_{PG.hex()}"] == 3.0
    assert both == {**bundle_resources({"CPU": 2.0}, PG, 1), **bundle_resources({"CPU": 1.0}, PG, 0),
                    f"CPU_group_{PG.hex()}": 3.0, f"bundle_group_{PG.hex()}": 2000.0}


def test_a_killed_actors_worker_ends_and_the_head_hears_it():
    n = node()
    (g,) = replies(n.handle("head", lease(for_actor=True, actor_id=b"a" * 16)))
    out = n.handle("head", m.KillWorker(worker_id=g.msg.worker_id, force=True))
    sends = [c for c in out if isinstance(c, Send)]
    assert sends and sends[0].to is None and isinstance(sends[0].msg, m.WorkerExited)
    assert n.report().available == {"CPU": 2.0} and n.granted == {}


def test_requests_it_does_not_serve_are_answered_and_others_ignored():
    n = node()
    (r,) = n.handle("x", m.StorePin(object_id=b"o" * 20, rid=5))
    assert isinstance(r, ReplyError)
    assert n.handle("x", m.StoreUnpin(object_ids=[])) == []


def test_head_links_drop_cluster_views_undecoded_and_decode_the_rest():
    views = ViewCount()
    view = m.encode(m.ClusterView(nodes=[node().info()] * 3))
    assert views.decoder(view) is DROPPED
    assert (views.frames, views.size) == (1, len(view))
    other = m.NodeRegistered(persistent=True)
    assert views.decoder(m.encode(other)) == other


def test_only_the_cluster_and_a_jobs_submitters_may_push():
    cluster = Principal(kind=Kind.NODE, role=Role.CLUSTER, name="head")
    job1 = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="job 1", job_id=1)
    viewer = Principal(kind=Kind.JOB, role=Role.VIEW, name="job 1 viewer", job_id=1)
    job2 = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="job 2", job_id=2)
    s = spec()
    assert may_push(cluster, s) and may_push(job1, s)
    assert not may_push(viewer, s) and not may_push(job2, s)
