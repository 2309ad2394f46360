"""Placement groups on one node, with Ray's API (runs against Ray too)."""

import pytest

pytestmark = pytest.mark.timeout(90)


def test_placement_group_reserves_and_releases(ray_start, wait_for):
    ray = ray_start
    from importlib import import_module

    util = import_module(ray.__name__ + ".util")
    strategies = import_module(ray.__name__ + ".util.scheduling_strategies")
    before = ray.available_resources()["CPU"]
    pg = util.placement_group([{"CPU": 1}, {"CPU": 2}], strategy="PACK")
    assert ray.get(pg.ready(), timeout=30) is not None
    assert pg.wait(10)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == before - 3,
             message="the bundles' CPUs leave the free pool")

    @ray.remote(num_cpus=1)
    def inside():
        return "ran"

    pinned = strategies.PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    assert ray.get([inside.options(scheduling_strategy=pinned).remote() for _ in range(4)]) == ["ran"] * 4
    any_bundle = strategies.PlacementGroupSchedulingStrategy(pg)
    assert ray.get(inside.options(scheduling_strategy=any_bundle).remote()) == "ran"

    @ray.remote(num_cpus=1)
    class InGroup:
        def ping(self):
            return "pong"

    actor = InGroup.options(scheduling_strategy=pinned).remote()
    assert ray.get(actor.ping.remote()) == "pong"
    ray.kill(actor)

    table = util.placement_group_table(pg)
    assert table["state"] == "CREATED" and table["strategy"] == "PACK"
    util.remove_placement_group(pg)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == before,
             message="removing the group frees its CPUs")


def test_placement_group_that_cannot_fit_stays_pending(ray_start):
    ray = ray_start
    from importlib import import_module

    util = import_module(ray.__name__ + ".util")
    pg = util.placement_group([{"CPU": 100}], strategy="STRICT_PACK")
    assert not pg.wait(1)
    ready, _ = ray.wait([pg.ready()], timeout=0.5)
    assert ready == []
    util.remove_placement_group(pg)


def test_placement_group_bad_input_is_rejected(ray_start):
    ray = ray_start
    from importlib import import_module

    util = import_module(ray.__name__ + ".util")
    with pytest.raises(ValueError):
        util.placement_group([{"CPU": 1}], strategy="DIAGONAL")
    with pytest.raises(ValueError):
        util.placement_group([])


def test_named_placement_group_lookup(ray_start):
    ray = ray_start
    from importlib import import_module

    util = import_module(ray.__name__ + ".util")
    pg = util.placement_group([{"CPU": 1}], name="pg_lookup_test")
    assert ray.get(pg.ready(), timeout=30) is not None
    again = util.get_placement_group("pg_lookup_test")
    assert again.id == pg.id
    util.remove_placement_group(pg)


def test_child_tasks_are_captured_by_the_group(ray_start):
    ray = ray_start
    from importlib import import_module

    util = import_module(ray.__name__ + ".util")
    strategies = import_module(ray.__name__ + ".util.scheduling_strategies")
    pg = util.placement_group([{"CPU": 2}])
    assert ray.get(pg.ready(), timeout=30) is not None

    @ray.remote(num_cpus=1)
    def child():
        current = util.get_current_placement_group()
        return current.id.hex() if current is not None else None

    @ray.remote(num_cpus=1)
    def parent():
        return ray.get(child.remote())

    captured = strategies.PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=captured).remote(), timeout=30) == pg.id.hex()
    free = strategies.PlacementGroupSchedulingStrategy(pg)
    assert ray.get(parent.options(scheduling_strategy=free).remote(), timeout=30) is None
    util.remove_placement_group(pg)


def test_requests_a_bundle_cannot_hold_are_refused_at_remote(ray_clean):
    """As in Ray: "bundle" is reserved; an actor placed without num_cpus
    needs a CPU in the bundle; what a task is given reads as plain names."""
    import importlib

    ray = ray_clean
    ray.init(num_cpus=2, resources={"a": 1})
    util = importlib.import_module(f"{ray.__name__}.util")
    strategies = importlib.import_module(f"{ray.__name__}.util.scheduling_strategies")
    with pytest.raises((ValueError, ray.exceptions.RayError)):  # Ray: RaySystemError
        util.placement_group([{"bundle": 1}])
    pg = util.placement_group([{"a": 1}])
    cpu_pg = util.placement_group([{"CPU": 1}])
    ray.get([pg.ready(), cpu_pg.ready()])
    in_pg = strategies.PlacementGroupSchedulingStrategy(placement_group=pg)
    in_cpu_pg = strategies.PlacementGroupSchedulingStrategy(placement_group=cpu_pg)

    @ray.remote
    class A:
        def ready(self):
            return True

    @ray.remote
    def given():
        return ray.get_runtime_context().get_assigned_resources()

    with pytest.raises(ValueError):
        A.options(scheduling_strategy=in_pg).remote()
    with pytest.raises(ValueError):
        A.options(num_cpus=1, scheduling_strategy=in_pg).remote()
    with pytest.raises(ValueError):
        given.options(scheduling_strategy=in_pg).remote()  # a task asks 1 CPU
    assert ray.get(A.options(num_cpus=0, scheduling_strategy=in_pg).remote().ready.remote())
    assert ray.get(given.options(scheduling_strategy=in_cpu_pg).remote()) == {"CPU": 1}
    with pytest.raises(ValueError, match=r"Cannot schedule .*A with the placement group because the actor "
                                         r"requires 1 CPU for creation, but it cannot fit into any bundles"):
        A.options(scheduling_strategy=in_pg, name="a", get_if_exists=True).remote()
    with pytest.raises(ValueError, match=r"Cannot schedule .*A with the placement group because the resource "
                                         r"request \{'a': 2, 'CPU': 1\} cannot fit into any bundles"):
        A.options(num_cpus=1, resources={"a": 2}, scheduling_strategy=in_pg).remote()


def test_given_resources_and_warnings_inside_a_group(ray_clean):
    """What a task is given in a bundle includes its memory; a task blocked
    on its child lends the bundle's CPU to it; object_store_memory for an
    actor or a bundle is deprecated, as in Ray."""
    import importlib
    import warnings

    ray = ray_clean
    ray.init(num_cpus=1)
    util = importlib.import_module(f"{ray.__name__}.util")
    strategies = importlib.import_module(f"{ray.__name__}.util.scheduling_strategies")
    pg = util.placement_group([{"CPU": 1, "memory": 500}])
    ray.get(pg.ready(), timeout=30)
    captured = strategies.PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)

    @ray.remote(num_cpus=1)
    def given():
        return ray.get_runtime_context().get_assigned_resources()

    @ray.remote(num_cpus=1)
    def parent():
        return ray.get(given.remote())

    assert ray.get(given.options(memory=100, scheduling_strategy=captured).remote(), timeout=30) == {
        "CPU": 1, "memory": 100}
    assert ray.get(parent.options(scheduling_strategy=captured).remote(), timeout=30) == {"CPU": 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        @ray.remote(object_store_memory=1)
        class Holder:
            pass

        Holder.remote()
        util.placement_group([{"object_store_memory": 1}], strategy="STRICT_PACK")
    said = [str(w.message) for w in caught]
    assert any("Setting 'object_store_memory' for actors is deprecated" in s for s in said), said
    assert any("Setting 'object_store_memory' for bundles is deprecated" in s for s in said), said
