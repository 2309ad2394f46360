"""A placement group's lifecycle, and where the head puts actors, without I/O."""

from __future__ import annotations

import pytest

from manta._private.control import placement_groups as pgs
from manta._private.protocol import messages as m
from manta._private.scheduling.policy import NodeView, Unschedulable, choose_node
from manta._private.scheduling.resources import to_units


def group(strategy="PACK", bundles=({"CPU": 1},)):
    spec = m.PlacementGroupSpec(pg_id=b"g" * 18, bundles=[dict(b) for b in bundles], strategy=strategy)
    return pgs.PGEntry(spec)


def free(**nodes):
    return {nid.encode(): to_units({"CPU": cpus}) for nid, cpus in nodes.items()}


def test_a_group_is_planned_then_created():
    g = group(bundles=[{"CPU": 1}, {"CPU": 1}])
    p = g.plan(free(a=2, b=2))
    assert p == pgs.Plan(0, [0, 1], [b"a", b"a"]) and g.placing
    assert not g.needs_placement()
    assert g.placed(p) and g.state is pgs.CREATED and g.nodes == [b"a", b"a"]
    assert g.answers()


def test_a_group_that_does_not_fit_waits():
    g = group(bundles=[{"CPU": 4}])
    assert g.plan(free(a=2)) is None and g.needs_placement()


def test_a_node_death_reschedules_only_the_lost_bundles():
    g = group("STRICT_SPREAD", [{"CPU": 1}] * 3)
    g.placed(g.plan(free(a=1, b=1, c=1)))
    assert g.node_died(b"b") and g.state is pgs.RESCHEDULING
    # STRICT_SPREAD: the lost bundle may not join a node that holds another.
    p = g.plan(free(a=1, c=1, d=1))
    assert p.indices == [1] and p.nodes == [b"d"]
    assert g.placed(p) and g.nodes == [b"a", b"d", b"c"]


def test_an_attempt_overtaken_by_a_node_death_is_thrown_away():
    g = group(bundles=[{"CPU": 1}, {"CPU": 1}])
    p = g.plan(free(a=1, b=1))
    g.node_died(b"b")  # while the head reserves
    assert not g.placed(p) and g.state is pgs.PENDING and g.needs_placement()


def test_a_removed_group_takes_no_placement():
    g = group()
    p = g.plan(free(a=2))
    assert g.remove("removed by the user")
    assert not g.placed(p) and g.state is pgs.REMOVED and g.answers()
    assert not g.remove("again")


def test_an_impossible_transition_is_a_bug():
    g = group()
    g.remove("gone")
    with pytest.raises(pgs.IllegalTransition):
        g.move(pgs.CREATED)


def view(nid, total, available=None):
    return NodeView(nid.encode(), f"tcp:{nid}:1", to_units(total), to_units(available if available is not None else total))


def test_actors_go_to_the_first_node_with_room_else_the_first_that_could_hold_them():
    nodes = [view("a", {"CPU": 2}, {"CPU": 0}), view("b", {"CPU": 2}), view("c", {"CPU": 2})]
    assert choose_node(to_units({"CPU": 1}), nodes).node_id == b"b"
    busy = [view("a", {"CPU": 2}, {"CPU": 0}), view("b", {"CPU": 2}, {"CPU": 0})]
    assert choose_node(to_units({"CPU": 1}), busy).node_id == b"a"
    assert choose_node(to_units({"GPU": 1}), nodes) is None


def test_spread_actors_take_turns():
    nodes = [view("a", {"CPU": 2}), view("b", {"CPU": 2})]
    picks = [choose_node({}, nodes, kind=m.PlacementKind.SPREAD, turn=t).node_id for t in range(4)]
    assert picks == [b"a", b"b", b"a", b"b"]


def test_hard_affinity_to_a_missing_node_cannot_be_scheduled_soft_falls_back():
    nodes = [view("a", {"CPU": 2})]
    with pytest.raises(Unschedulable):
        choose_node({}, nodes, kind=m.PlacementKind.NODE_AFFINITY, target=b"zz")
    soft = choose_node({}, nodes, kind=m.PlacementKind.NODE_AFFINITY, target=b"zz", soft=True)
    assert soft.node_id == b"a"
    assert choose_node({}, nodes, kind=m.PlacementKind.NODE_AFFINITY, target=b"a").node_id == b"a"
