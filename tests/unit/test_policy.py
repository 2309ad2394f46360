from manta._private.protocol.messages import PlacementKind
from manta._private.scheduling.policy import LOCAL, NodeView, place
from manta._private.scheduling.resources import to_units


def node(name, total, available=None):
    return NodeView(name.encode(), f"unix:/{name}", to_units(total), to_units(available if available is not None else total))


def test_local_node_first_while_it_has_room():
    local = node("a", {"CPU": 2})
    others = {b"b": node("b", {"CPU": 8})}
    assert place(to_units({"CPU": 1}), local, others) == LOCAL


def test_busy_local_node_spills_to_the_freest_peer():
    local = node("a", {"CPU": 2}, {"CPU": 0})
    others = {b"b": node("b", {"CPU": 4}, {"CPU": 1}), b"c": node("c", {"CPU": 4}, {"CPU": 3})}
    d = place(to_units({"CPU": 1}), local, others)
    assert d.node is not None and d.node.node_id == b"c"


def test_everyone_busy_waits_locally():
    local = node("a", {"CPU": 2}, {"CPU": 0})
    others = {b"b": node("b", {"CPU": 2}, {"CPU": 0})}
    assert place(to_units({"CPU": 1}), local, others) == LOCAL


def test_custom_resource_only_elsewhere_goes_there_even_when_busy():
    local = node("a", {"CPU": 2})
    others = {b"b": node("b", {"CPU": 1, "gizmo": 1}, {"CPU": 1, "gizmo": 0})}
    d = place(to_units({"CPU": 1, "gizmo": 1}), local, others)
    assert d.node is not None and d.node.node_id == b"b" and not d.infeasible


def test_nobody_can_ever_run_it():
    local = node("a", {"CPU": 2})
    d = place(to_units({"CPU": 64}), local, {b"b": node("b", {"CPU": 4})})
    assert d.node is None and d.infeasible


def test_redirected_request_is_never_redirected_again():
    local = node("a", {"CPU": 2}, {"CPU": 0})
    others = {b"b": node("b", {"CPU": 4})}
    assert place(to_units({"CPU": 1}), local, others, may_spill=False) == LOCAL


def test_redirected_request_this_node_can_never_run_waits_for_the_cluster_to_change():
    # Sent here on a stale view (the node that had the resource died).
    local = node("a", {"CPU": 2})
    others = {b"b": node("b", {"CPU": 2, "bundle": 1})}
    d = place(to_units({"bundle": 1}), local, others, may_spill=False)
    assert d.node is None and d.infeasible


def test_hard_affinity_goes_to_its_node_even_when_busy():
    local = node("a", {"CPU": 2})
    others = {b"b": node("b", {"CPU": 2}, {"CPU": 0})}
    d = place(to_units({"CPU": 1}), local, others, kind=PlacementKind.NODE_AFFINITY, target=b"b")
    assert d.node is not None and d.node.node_id == b"b"


def test_hard_affinity_to_a_missing_node_is_unschedulable():
    import pytest

    from manta._private.scheduling.policy import Unschedulable

    with pytest.raises(Unschedulable):
        place(to_units({"CPU": 1}), node("a", {"CPU": 2}), {}, kind=PlacementKind.NODE_AFFINITY, target=b"zz")


def test_soft_affinity_to_a_missing_node_falls_back():
    d = place(to_units({"CPU": 1}), node("a", {"CPU": 2}), {}, kind=PlacementKind.NODE_AFFINITY, target=b"zz", soft=True)
    assert d == LOCAL


def test_spread_takes_turns_over_nodes():
    local = node("a", {"CPU": 2})
    others = {b"b": node("b", {"CPU": 2}), b"c": node("c", {"CPU": 2})}
    picks = []
    for turn in range(6):
        d = place(to_units({"CPU": 1}), local, others, kind=PlacementKind.SPREAD, turn=turn)
        picks.append(b"a" if d.node is None else d.node.node_id)
    assert picks == [b"a", b"b", b"c", b"a", b"b", b"c"]


def test_label_selectors_match_as_rays_do():
    from manta._private.scheduling.policy import labels_match, node_labels

    labels = node_labels(b"\x01" * 16, {"gpu": "A100", "zone": "us-west"})
    assert labels["ray.io/node-id"] == "01" * 16
    assert labels_match({"gpu": "A100"}, labels)
    assert not labels_match({"gpu": "H100"}, labels)
    assert labels_match({"gpu": "!H100", "zone": "in(us-east, us-west)"}, labels)
    assert not labels_match({"zone": "!in(us-west)"}, labels)
    assert labels_match({"missing": "!x"}, labels) and not labels_match({"missing": "x"}, labels)
