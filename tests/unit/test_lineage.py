"""The owner's lineage table, without processes."""

from manta._private.runtime.lineage import LineageTable


def test_a_task_is_kept_until_its_last_stored_output_is_freed():
    t = LineageTable(max_bytes=10_000)
    assert t.keep(b"t1", "task1", {b"o1", b"o2"}, 100) == []
    assert t.task_of(b"o1") == "task1" and b"t1" in t and t.bytes == 100
    assert t.released(b"o1") is None  # o2 still needs it
    assert t.released(b"o2") == "task1"  # now its pins can go
    assert b"t1" not in t and t.bytes == 0 and t.task_of(b"o2") is None


def test_past_the_budget_the_oldest_lineage_is_evicted_and_remembered():
    t = LineageTable(max_bytes=250)
    assert t.keep(b"t1", "task1", {b"o1"}, 100) == []
    assert t.keep(b"t2", "task2", {b"o2"}, 100) == []
    assert t.keep(b"t3", "task3", {b"o3"}, 100) == ["task1"]
    assert t.task_of(b"o1") is None and t.was_evicted(b"o1")
    assert t.task_of(b"o3") == "task3" and not t.was_evicted(b"o3")
    # Freeing an evicted output forgets it was evicted: nothing to rebuild.
    assert t.released(b"o1") is None and not t.was_evicted(b"o1")


def test_the_newest_task_is_kept_even_past_the_budget():
    t = LineageTable(max_bytes=10)
    assert t.keep(b"t1", "big", {b"o1"}, 100) == []
    assert t.task_of(b"o1") == "big"


def test_a_rebuild_unbacks_outputs_until_it_finishes():
    t = LineageTable(max_bytes=10_000)
    t.keep(b"t1", "task1", {b"o1", b"o2"}, 100)
    t.rebuilding(b"t1")
    assert not t.backs_outputs(b"t1") and t.task_of(b"o1") is None
    assert b"t1" in t  # still kept: its pins hold the arguments for the rerun
    t.keep(b"t1", "task1", {b"o1"}, 100)  # finished; o2 was dropped meanwhile
    assert t.backs_outputs(b"t1") and t.task_of(b"o1") == "task1" and t.bytes == 100
    assert t.released(b"o1") == "task1"


def test_drop_returns_the_task_once():
    t = LineageTable(max_bytes=10_000)
    t.keep(b"t1", "task1", {b"o1"}, 100)
    assert t.drop(b"t1") == "task1"
    assert t.drop(b"t1") is None and t.bytes == 0
