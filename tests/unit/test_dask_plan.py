"""The dask scheduler's plan: which graph keys to produce, in what order,
and when each input can be let go of (no cluster: `plan` is plain code)."""

from __future__ import annotations

import operator

import pytest

pytest.importorskip("dask")

from manta.util.dask import scheduler  # noqa: E402 (after the skip)


def _graph(legacy: dict) -> dict:
    return scheduler._graph_and_annotations(legacy)[0]


def test_only_what_the_keys_need_runs_each_after_what_it_reads():
    graph = _graph({
        "a": 1,
        "b": (operator.add, "a", 1),
        "c": (operator.mul, "b", "a"),
        "unused": (operator.neg, "c"),
        "alias": "c",
    })
    steps = scheduler.plan(graph, ["alias"])
    order = [s.key for s in steps]
    assert set(order) == {"a", "b", "c", "alias"}
    for i, step in enumerate(steps):
        assert all(order.index(d) < i for d in step.deps)
    kinds = {s.key: s.kind for s in steps}
    assert kinds == {"a": "data", "b": "task", "c": "task", "alias": "alias"}
    assert next(s for s in steps if s.key == "a").node == 1


def test_an_input_is_let_go_of_after_its_last_reader_unless_it_was_asked_for():
    graph = _graph({"a": 1, "b": (operator.neg, "a"), "c": (operator.add, "a", "b")})
    steps = scheduler.plan(graph, ["c"])
    released = {k: s.key for s in steps for k in s.release}
    assert released == {"a": "c", "b": "c"}
    kept = scheduler.plan(graph, ["c", "a"])
    assert all("a" not in s.release for s in kept)


def test_keys_run_in_the_order_asked_for_depth_first():
    graph = _graph({"x": (operator.neg, 1), "y": (operator.neg, 2), "z": (operator.add, "y", 1)})
    assert [s.key for s in scheduler.plan(graph, ["x", "z"])] == ["x", "y", "z"]


def test_a_long_chain_does_not_hit_the_recursion_limit():
    chain: dict = {"k0": 0}
    for i in range(1, 5000):
        chain[f"k{i}"] = (operator.add, f"k{i - 1}", 1)
    steps = scheduler.plan(_graph(chain), ["k4999"])
    assert [s.key for s in steps] == [f"k{i}" for i in range(5000)]


def test_a_key_missing_from_the_graph_is_named():
    with pytest.raises(KeyError, match="'nope' is not in the dask graph"):
        scheduler.plan(_graph({"c": (operator.neg, 1)}), ["nope"])
