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


def test_work_in_a_bundle_is_counted_against_the_bundle_and_the_group_as_ray_counts_it():
    from manta._private.scheduling.bundles import bundle_resource, bundle_resources, charge

    pg = bytes(range(18))
    free = to_units({**bundle_resources({"CPU": 1}, pg, 0), **bundle_resources({"CPU": 2, "GPU": 1}, pg, 1)})
    wild, in0, in1 = (bundle_resource("CPU", pg, i) for i in (None, 0, 1))
    # Bundle i: its own names and the group's.
    assert charge(to_units({in1: 1}), free) == to_units({in1: 1, wild: 1})
    # Any bundle (-1): the group's names and the first bundle's with room,
    # resource by resource (as Ray does).
    assert charge(to_units({wild: 1}), free) == to_units({wild: 1, in0: 1})
    assert charge(to_units({wild: 1.5}), free) == to_units({wild: 1.5, in1: 1.5})
    gpu_wild, gpu1 = bundle_resource("GPU", pg, None), bundle_resource("GPU", pg, 1)
    assert charge(to_units({wild: 1, gpu_wild: 1}), free) == to_units({wild: 1, in0: 1, gpu_wild: 1, gpu1: 1})
    # The group has 3 CPUs free, yet no one bundle has 2.5.
    assert charge(to_units({wild: 2.5}), free) is None
    # What must be free besides (an actor's placement CPU) is looked for in
    # the same bundle, and not taken.
    assert charge(to_units({gpu_wild: 1}), free, to_units({wild: 2})) == to_units({gpu_wild: 1, gpu1: 1})
    assert charge(to_units({in0: 1}), free, to_units({in0: 0.5})) is None
    # Not in a group: as asked.
    assert charge(to_units({"CPU": 1}), to_units({"CPU": 1})) == to_units({"CPU": 1})
    assert charge(to_units({"CPU": 2}), to_units({"CPU": 1})) is None
