import random

import pytest

from manta._private.objectstore.allocator import ALIGN, Allocator, OutOfSpace
from manta._private.objectstore.store import StoreError, StoreTable


def test_allocations_are_aligned_and_disjoint():
    a = Allocator(1 << 16)
    offs = [a.allocate(n) for n in (1, 63, 64, 65, 1000)]
    assert all(o % ALIGN == 0 for o in offs)
    assert len(set(offs)) == len(offs)
    a.validate()


def test_free_merges_neighbours_so_space_is_reusable():
    a = Allocator(1024)
    x, y, z = a.allocate(256), a.allocate(256), a.allocate(512)
    with pytest.raises(OutOfSpace):
        a.allocate(1)
    a.free(y)
    a.free(x)
    a.free(z)
    a.validate()
    assert a.allocate(1024) == 0


def test_out_of_space_reports_sizes():
    a = Allocator(1024)
    a.allocate(800)
    with pytest.raises(OutOfSpace) as info:
        a.allocate(500)
    assert info.value.requested == 500 and info.value.capacity == 1024 and info.value.used == 832


def test_random_workload_keeps_invariants():
    rng = random.Random(1)
    a = Allocator(1 << 20)
    live: list[int] = []
    for _ in range(5000):
        if live and rng.random() < 0.5:
            a.free(live.pop(rng.randrange(len(live))))
        else:
            try:
                live.append(a.allocate(rng.randint(1, 40_000)))
            except OutOfSpace:
                pass
    a.validate()
    for off in live:
        a.free(off)
    a.validate()
    assert a.used == 0 and a.largest_free() == a.capacity


def test_store_keeps_pinned_bytes_after_owner_frees():
    s = StoreTable(1 << 20)
    s.create(b"o", 1000, "writer")
    s.seal(b"o")
    got = []
    obj = s.pin(b"o", "reader", got.append)
    assert obj is not None
    s.free(b"o")
    assert b"o" in s.objects  # a reader still has a view
    s.unpin(b"o", "reader")
    assert b"o" not in s.objects and s.used == 0


def test_pin_before_seal_waits_for_seal():
    s = StoreTable(1 << 20)
    s.create(b"o", 10, "w")
    got = []
    assert s.pin(b"o", "r", got.append) is None
    waiters = s.seal(b"o")
    for w in waiters:
        w(s.objects[b"o"])
    assert got and got[0].size == 10


def test_dead_client_releases_pins_and_unsealed_objects():
    s = StoreTable(1 << 20)
    s.create(b"a", 100, "w")
    s.seal(b"a")
    s.pin(b"a", "r", lambda o: None)
    s.free(b"a")
    s.create(b"b", 100, "r")  # never sealed
    waiting = []
    s.pin(b"b", "other", waiting.append)
    for w in s.client_gone("r"):
        w(None)
    assert waiting == [None]
    s.client_gone("other")
    assert s.objects == {} and s.used == 0


def test_store_errors_name_the_sizes():
    s = StoreTable(1000)
    with pytest.raises(StoreError, match="larger than the object store"):
        s.create(b"x", 5000, "w")
    s.create(b"y", 900, "w")
    with pytest.raises(StoreError, match="full"):
        s.create(b"z", 500, "w")


def test_pulled_copies_stay_until_space_is_needed_then_go_oldest_first():
    s = StoreTable(1000)
    for oid in (b"c1", b"c2"):
        s.create(oid, 400, "pull")
        s.seal(oid)
        s.mark_copy(oid)
    s.pin(b"c1", "r", lambda o: None)  # c1 in use, and most recently used
    s.unpin(b"c1", "r")
    assert set(s.objects) == {b"c1", b"c2"}  # readers gone, copies kept
    s.create(b"new", 400, "w")  # needs room: evicts the least recently used copy
    assert set(s.objects) == {b"c1", b"new"}
    s.pin(b"c1", "r", lambda o: None)
    with pytest.raises(StoreError, match="full"):
        s.create(b"big", 400, "w")  # the only copy left is pinned
