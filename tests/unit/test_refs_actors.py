import pytest

from manta._private.control.actors import ALIVE, DEAD, PENDING, RESTARTING, ActorEntry, IllegalTransition
from manta._private.protocol import messages as m
from manta._private.runtime.refs import DropActor, EndBorrow, FreeStored, ReferenceTable

ME = "unix:/me"


def test_owned_object_freed_when_last_ref_goes():
    t = ReferenceTable(ME)
    t.add_owned(b"a")
    t.set_ready(b"a", None, in_store=True)
    assert t.remove_local(b"a") == [FreeStored(b"a")]
    assert len(t) == 0


def test_pins_and_borrowers_keep_owned_objects():
    t = ReferenceTable(ME)
    t.add_owned(b"a")
    t.set_ready(b"a", b"v")
    t.pin(b"a", ME)
    t.add_borrower(b"a", "unix:/other")
    assert t.remove_local(b"a") == []
    assert t.unpin(b"a") == []
    assert t.remove_borrower(b"a", "unix:/other") == []
    assert len(t) == 0


def test_an_actor_hold_drops_the_actor_after_its_last_handle_and_borrower():
    t = ReferenceTable(ME)
    t.add_owned(b"hold", local=2)  # two handles in the creator
    t.set_ready(b"hold", b"")
    t.actor_holds[b"hold"] = b"actor"
    t.add_borrower(b"hold", "unix:/task")  # a handle passed to a task
    assert t.remove_local(b"hold") == [] and t.remove_local(b"hold") == []
    assert t.remove_borrower(b"hold", "unix:/task") == [DropActor(b"actor")]
    assert not t.actor_holds and len(t) == 0


def test_registered_borrow_ends_with_a_message_to_owner():
    t = ReferenceTable(ME)
    e, created = t.add_local(b"x", "unix:/owner")
    assert created and not e.owned
    e.registered = True
    assert t.remove_local(b"x") == [EndBorrow(b"x", "unix:/owner")]


def test_contained_refs_live_as_long_as_container():
    t = ReferenceTable(ME)
    t.add_owned(b"inner")
    t.set_ready(b"inner", None, in_store=True)
    t.add_owned(b"outer")
    t.set_ready(b"outer", b"v", contained=[(b"inner", ME)])
    assert t.remove_local(b"inner") == []
    assert t.remove_local(b"outer") == [FreeStored(b"inner")]
    assert len(t) == 0


def test_late_result_of_dropped_ref_is_freed():
    t = ReferenceTable(ME)
    t.add_owned(b"r")
    t.remove_local(b"r")
    waiters, cmds = t.set_ready(b"r", None, in_store=True)
    assert cmds == [FreeStored(b"r")]


def test_waiters_fire_once_on_ready():
    t = ReferenceTable(ME)
    t.add_owned(b"r")
    fired = []
    assert t.add_waiter(b"r", lambda: fired.append(1))
    waiters, _ = t.set_ready(b"r", b"v")
    for w in waiters:
        w()
    assert fired == [1]
    assert not t.add_waiter(b"r", lambda: fired.append(2))


def test_borrower_death_releases_everything_it_held():
    t = ReferenceTable(ME)
    for k in (b"a", b"b"):
        t.add_owned(k, local=0)
        t.set_ready(k, None, in_store=True)
        t.add_borrower(k, "w")
    assert sorted(c.object_id for c in t.remove_borrower_everywhere("w")) == [b"a", b"b"]


def _actor(max_restarts=0):
    spec = m.TaskSpec(task_id=b"t", job_id=1, name="A.__init__", fn_id=b"f", args=[],
                      kwarg_names=[], num_returns=0, owner="", resources={})
    return ActorEntry(m.ActorSpec(actor_id=b"a", job_id=1, class_name="A", creation=spec,
                                  max_restarts=max_restarts))


def test_actor_restarts_until_budget_is_spent():
    a = _actor(max_restarts=1)
    a.created("unix:/w1", b"w1")
    assert a.state == ALIVE and a.epoch == 1
    assert a.died("crash") is True and a.state == RESTARTING
    a.created("unix:/w2", b"w2")
    assert a.epoch == 2
    assert a.died("crash again") is False and a.state == DEAD
    assert a.death_cause == "crash again"


def test_actor_killed_without_restart_stays_dead():
    a = _actor(max_restarts=-1)
    a.created("x", b"w")
    a.no_restart = True
    assert a.died("killed") is False and a.state == DEAD


def test_actor_illegal_transition_raises():
    a = _actor()
    assert a.state == PENDING
    a.kill("gone")
    with pytest.raises(IllegalTransition):
        a.created("x", b"w")


def test_wait_answers_only_newer_epochs_or_death():
    a = _actor(max_restarts=1)
    assert not a.answers(0)
    a.created("x", b"w")
    assert a.answers(0) and not a.answers(1)


def test_pending_set_tracks_exactly_the_unready_entries():
    t = ReferenceTable(ME)
    t.add_owned(b"a")
    t.add_local(b"b", "unix:/owner")
    t.pin(b"c", "unix:/owner")
    assert t.pending == {b"a", b"b", b"c"}
    t.set_ready(b"a", b"v")
    assert t.pending == {b"b", b"c"}
    t.remove_local(b"b")
    t.unpin(b"c")
    assert t.pending == set()
    assert t.pending == {k for k, e in t.entries.items() if not e.state}
