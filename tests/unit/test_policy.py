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
