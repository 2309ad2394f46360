"""The head's table caps and the value checks, without processes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from manta._private.config import Config
from manta._private.head.bounds import Bounds, FunctionTable, KvTable
from manta._private.protocol import checks
from manta._private.protocol import messages as m
from manta._private.scheduling.resources import to_units


def test_kv_table_counts_entries_and_bytes_per_namespace() -> None:
    kv = KvTable()
    kv[("a", b"k1")] = b"xx"
    kv[("a", b"k2")] = b"yyy"
    kv[("b", b"k1")] = b"z"
    kv[("a", b"k1")] = b"x"  # overwrite: same entries, fewer bytes
    assert kv.usage == {"a": [2, 2 + 1 + 2 + 3], "b": [1, 3]}
    del kv[("b", b"k1")]
    assert "b" not in kv.usage
    kv.validate()


def _head(**caps: int) -> SimpleNamespace:
    deleted: list[tuple[str, bytes]] = []
    storage = SimpleNamespace(delete=lambda table, key: deleted.append((table, key)), deleted=deleted)
    return SimpleNamespace(config=Config(**caps), kv=KvTable(), actors={}, named={}, pgs={}, jobs={},
                           storage=storage)


def test_kv_caps_refuse_only_what_would_pass_them() -> None:
    head = _head(max_kv_entries_per_namespace=2, max_kv_bytes_per_namespace=100)
    bounds = Bounds(head)  # type: ignore[arg-type]
    for key in (b"a", b"b"):
        assert bounds.refusal(m.KvPut(namespace="n", key=key, value=b"v")) == ""
        head.kv[("n", key)] = b"v"
    assert "max_kv_entries_per_namespace" in bounds.refusal(m.KvPut(namespace="n", key=b"c", value=b"v"))
    assert bounds.refusal(m.KvPut(namespace="n", key=b"a", value=b"w")) == "", "an overwrite adds no entry"
    assert bounds.refusal(m.KvPut(namespace="other", key=b"c", value=b"v")) == ""
    assert "max_kv_bytes_per_namespace" in bounds.refusal(m.KvPut(namespace="n", key=b"a", value=b"w" * 200))
    assert bounds.refusal(m.KvPut(namespace="n", key=b"a", value=b"w" * 200, overwrite=False)) == ""


def test_finished_jobs_are_trimmed_oldest_first_and_running_ones_refused() -> None:
    head = _head(max_jobs=10)
    bounds = Bounds(head)  # type: ignore[arg-type]
    for i in range(10):
        head.jobs[i] = SimpleNamespace(job_id=i, alive=i >= 5, end_time=float(i))
    assert bounds.refusal(m.RegisterDriver(namespace="", pid=1, env_vars={})) == ""
    assert sorted(head.jobs) == [1, 2, 3, 4, 5, 6, 7, 8, 9], "the oldest finished job went"
    for i in range(10, 11):
        head.jobs[i] = SimpleNamespace(job_id=i, alive=True, end_time=0.0)
    for i in range(1, 5):
        head.jobs[i].alive = True
    assert "max_jobs" in bounds.refusal(m.RegisterDriver(namespace="", pid=1, env_vars={}))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, -1, 1e19, "1", None, True])
def test_bad_quantities_are_named(bad: object) -> None:
    why = checks.resources_problem({"gadget": bad})
    assert "'gadget'" in why
    with pytest.raises(ValueError, match="'gadget'"):
        to_units({"gadget": bad})  # type: ignore[dict-item]
    assert "'CPU'" in checks.problem(m.RequestLease(job_id=1, resources={"CPU": 1.0}, env_vars={},
                                                    must_be_free={"CPU": bad}))  # type: ignore[dict-item]


def test_good_quantities_pass() -> None:
    assert checks.resources_problem({"CPU": 2, "memory": 4e12, "x": 0.0001}) == ""
    assert checks.problem(m.RequestLease(job_id=1, resources={"CPU": 1.0}, env_vars={})) == ""


def test_function_bytes_are_counted_and_capped() -> None:
    head = _head(max_function_bytes=100)
    head.functions = FunctionTable()
    head.functions.update({b"f1": b"x" * 60})
    bounds = Bounds(head)  # type: ignore[arg-type]
    assert head.functions.bytes == 60
    assert bounds.refusal(m.PutFunction(fn_id=b"f1", blob=b"x" * 60)) == "", "already there"
    assert "max_function_bytes" in bounds.refusal(m.PutFunction(fn_id=b"f2", blob=b"y" * 50))
    assert bounds.refusal(m.PutFunction(fn_id=b"f2", blob=b"y" * 40)) == ""


def test_task_records_with_infinite_times_are_refused() -> None:
    rec = m.TaskRecord(task_id=b"t" * 16, step="submitted", stimulus=0, time=math.inf)
    bad = m.TaskEvents(records=[rec], running=[], wall=0.0, node_id=b"", worker_id=b"", pid=1)
    assert "finite" in checks.problem(bad)
    ok = m.TaskEvents(records=[], running=[], wall=1.0, node_id=b"", worker_id=b"", pid=1)
    assert checks.problem(ok) == ""


def test_a_hostile_task_record_never_breaks_list_tasks() -> None:
    from manta._private.control.task_states import TaskEntry, TaskStates

    states = TaskStates(100)
    e = TaskEntry(b"t" * 16, "f", "NORMAL_TASK", 1, None)
    states.tasks[b"t" * 16] = e
    e.job_id, e.attempt, e.worker_pid = -5, 2**70, -1
    e.created, e.started, e.ended = 1e300, math.inf, -3.0
    (view,), total = states.query([], 10)
    m.encode(m.TaskList(tasks=[view], total=total, dropped=0))  # the reply can carry it


def test_a_claimed_count_of_lost_records_stays_encodable() -> None:
    from manta._private.control.task_states import TaskStates

    huge = m.TaskEvents(records=[], running=[], wall=1.0, node_id=b"", worker_id=b"", pid=1, lost=2**64 - 1)
    assert "range" in checks.problem(huge)
    states = TaskStates(100)
    for _ in range(3):
        states.fold(huge)
    m.encode(m.TaskList(tasks=[], total=0, dropped=states.dropped))
