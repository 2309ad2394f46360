import pytest

from manta._private.scheduling.bundles import bundle_resources, plan
from manta._private.scheduling.resources import to_units


def nodes(*cpus):
    return [(f"n{i}".encode(), to_units({"CPU": c})) for i, c in enumerate(cpus)]


def b(cpu):
    return to_units({"CPU": cpu})


def test_strict_pack_needs_one_node_for_everything():
    assert plan([b(1), b(1)], "STRICT_PACK", nodes(1, 2)) == [b"n1", b"n1"]
    assert plan([b(2), b(1)], "STRICT_PACK", nodes(2, 2)) is None


def test_pack_prefers_one_node_then_fills_in_order():
    assert plan([b(1), b(1)], "PACK", nodes(4, 4)) == [b"n0", b"n0"]
    assert plan([b(2), b(2)], "PACK", nodes(3, 3)) == [b"n0", b"n1"]


def test_strict_spread_needs_distinct_nodes():
    assert plan([b(1)] * 3, "STRICT_SPREAD", nodes(4, 4, 4)) == [b"n0", b"n1", b"n2"]
    assert plan([b(1)] * 3, "STRICT_SPREAD", nodes(4, 4)) is None


def test_spread_uses_every_node_before_doubling_up():
    got = plan([b(1)] * 3, "SPREAD", nodes(4, 4))
    assert got is not None and set(got[:2]) == {b"n0", b"n1"}
    assert plan([b(1)] * 3, "SPREAD", nodes(1, 1)) is None


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="STRICT_PACK"):
        plan([b(1)], "DIAGONAL", nodes(1))


def test_bundle_resources_name_each_bundle_and_the_group():
    res = bundle_resources({"CPU": 2}, b"\x01\x02", 0)
    assert res["CPU_group_0_0102"] == 2 and res["CPU_group_0102"] == 2


def test_a_bundle_request_reads_back_as_the_resources_it_stands_for():
    from manta._private.scheduling.bundles import bundle_resource, group_of, unbundled

    pg = bytes(range(18))
    asked = {bundle_resource("CPU", pg, 0): 2.0, bundle_resource("GPU", pg, None): 1.0, "bundle_group_0_" + pg.hex(): 0.001}
    assert unbundled(asked) == {"CPU": 2.0, "GPU": 1.0}
    assert unbundled({"my_group_x": 1.0}) == {"my_group_x": 1.0}  # the user's own name
    assert group_of(asked) == pg and group_of({"CPU": 1.0}) is None
