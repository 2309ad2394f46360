"""The state API's tables without processes: a node's roster of workers and
drivers (list_workers, list_runtime_envs) and a process's references in
Ray's words (list_objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from manta._private import ids
from manta._private.node import roster as rs
from manta._private.node.roster import Roster
from manta._private.runtime.introspect import reference_records
from manta._private.runtime.refs import ReferenceTable

ME = "unix:/me"
NODE = b"n" * 16


class Wall:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


def _one(r: Roster, worker_id: bytes) -> Any:
    return next(w for w in r.records(NODE, "10.0.0.1") if w.worker_id == worker_id)


def test_a_worker_is_listed_from_its_fork_to_its_exit():
    r = Roster(Wall())
    r.launching(b"w1", (("A", "1"),))
    r.launched(b"w1", 42)
    r.registered(b"w1", 42, False, 0, "conn")
    r.leased(b"w1", 7)
    w = _one(r, b"w1")
    assert (w.alive, w.driver, w.pid, w.job_id, w.ip, w.node_id) == (True, False, 42, 7, "10.0.0.1", NODE)
    assert w.launch_ms < w.launched_ms < w.start_ms and w.end_ms == 0
    assert [p.worker_id for p in r.clients()] == [b"w1"]
    r.exit(b"w1", None, "the worker's connection closed")
    w = _one(r, b"w1")
    assert not w.alive and w.exit_type == rs.SYSTEM_ERROR and w.end_ms > w.start_ms
    assert not r.clients()


def test_the_exit_code_decides_an_exit_whichever_event_comes_first():
    r = Roster(Wall())
    for wid, pid in ((b"ok", 1), (b"bad", 2)):
        r.launching(wid, ())
        r.launched(wid, pid)
        r.registered(wid, pid, False, 1, object())
        r.exit(wid, None, "the worker's connection closed")
    r.reaped(1, 0)
    r.reaped(2, 3)
    assert _one(r, b"ok").exit_type == rs.INTENDED_USER_EXIT
    bad = _one(r, b"bad")
    assert bad.exit_type == rs.SYSTEM_ERROR and "code 3" in bad.exit_detail


def test_an_exit_the_agent_caused_keeps_its_reason():
    r = Roster(Wall())
    r.launching(b"w", ())
    r.launched(b"w", 5)
    r.ending(b"w", rs.NODE_OUT_OF_MEMORY, "memory above the threshold")
    r.ending(b"w", rs.INTENDED_SYSTEM_EXIT, "a second reason does not replace the first")
    r.reaped(5, -9)
    r.exit(b"w", -9, "worker process 5 exited with code -9")
    w = _one(r, b"w")
    assert (w.exit_type, w.exit_detail) == (rs.NODE_OUT_OF_MEMORY, "memory above the threshold")


def test_drivers_come_and_go_and_exited_processes_are_bounded():
    r = Roster(Wall(), keep=2)
    r.registered(b"d", 9, True, 3, "conn")
    r.exit(b"d", None, "its connection closed")
    d = _one(r, b"d")
    assert d.driver and d.job_id == 3 and d.exit_type == rs.INTENDED_USER_EXIT and d.launch_ms == -1
    for i in range(3):
        wid = bytes([i]) * 16
        r.launched(wid, 100 + i)  # prestarted: no fork asked for
        r.exit(wid, 1, "crashed")
    assert [w.pid for w in r.records(NODE, "")] == [101, 102]


def test_runtime_envs_are_the_live_workers_pools_with_their_setup():
    r = Roster(Wall(), hidden=("GPU",))
    work = (("WD", "abc"),)
    r.launching(b"a", work)
    r.launching(b"b", (*work, ("GPU", "1")))  # the same environment for GPU work
    r.launching(b"c", ())
    r.registered(b"d", 1, True, 1, "conn")  # a driver runs in none
    r.env_set_up(b"a", 12.5, "unpacking failed")
    envs = {tuple(sorted(e.env.items())): e for e in r.runtime_envs(NODE)}
    assert set(envs) == {work, ()}
    assert (envs[work].workers, envs[work].success, envs[work].error) == (2, False, "unpacking failed")
    r.env_set_up(b"b", 3.0, "")  # a success replaces a failure
    r.env_set_up(b"a", 99.0, "")  # and then stands
    e = next(e for e in r.runtime_envs(NODE) if e.env)
    assert (e.success, e.creation_ms, e.error) == (True, 3.0, "")
    assert next(e for e in r.runtime_envs(NODE) if not e.env).creation_ms is None
    r.exit(b"a", 0, "")
    r.exit(b"b", 0, "")
    assert [e.env for e in r.runtime_envs(NODE)] == [{}] and not r.setups


@dataclass
class _Spec:
    attempt: int = 0
    actor_id: bytes | None = None


@dataclass
class _Task:
    resolved: bool
    lease: Any = None
    spec: _Spec = field(default_factory=_Spec)


def _by_id(records: list[Any]) -> dict[bytes, Any]:
    return {r.object_id: r for r in records}


def test_references_are_typed_in_rays_order_of_precedence():
    t = ReferenceTable(ME)
    put, inner, arg, hold = (ids.object_id(bytes([i]) * 16, 0) for i in range(4))
    t.add_owned(put)
    t.set_ready(put, b"value")
    t.add_owned(inner, local=0)
    t.add_owned(b"outer" + bytes(15), local=1)
    t.set_ready(inner, None, in_store=True, node_id=NODE)
    t.set_ready(b"outer" + bytes(15), b"[ref]", contained=[(inner, ME)])
    t.add_local(arg, "unix:/owner")  # borrowed, and passed to a task
    t.pin(arg, "unix:/owner")
    t.add_owned(hold)
    t.set_ready(hold, b"")
    t.actor_holds[hold] = b"actor"
    recs = _by_id(reference_records(t, lambda oid: None))
    assert recs[put].reference_type == "LOCAL_REFERENCE" and recs[put].task_status == "FINISHED"
    assert recs[put].size == len(b"value")
    assert recs[inner].reference_type == "CAPTURED_IN_OBJECT"
    assert recs[inner].in_store and recs[inner].size == -1 and recs[inner].node_id == NODE
    assert recs[arg].reference_type == "USED_BY_PENDING_TASK" and recs[arg].task_status == "NIL"
    assert (recs[hold].reference_type, recs[hold].task_status) == ("ACTOR_HANDLE", "NIL")
    t.remove_local(put)
    t.remove_local(b"outer" + bytes(15))
    t.remove_local(arg)
    t.unpin(arg)
    t.remove_local(hold)


def test_an_owned_return_shows_its_tasks_progress_and_attempt():
    t = ReferenceTable(ME)
    ret = ids.object_id(b"t" * 16, 1)
    t.add_owned(ret)
    tasks: dict[bytes, Any] = {ret: _Task(resolved=False)}

    def status() -> tuple[str, int]:
        r = _by_id(reference_records(t, tasks.get))[ret]
        return r.task_status, r.attempt

    assert status() == ("PENDING_ARGS_AVAIL", 1)
    tasks[ret] = _Task(resolved=True)
    assert status() == ("PENDING_NODE_ASSIGNMENT", 1)
    tasks[ret] = _Task(resolved=True, lease=object(), spec=_Spec(attempt=1))
    assert status() == ("SUBMITTED_TO_WORKER", 2)
    tasks[ret] = _Task(resolved=True, spec=_Spec(actor_id=b"a"))
    assert status() == ("SUBMITTED_TO_WORKER", 1)  # an actor call needs no lease
    t.set_ready(ret, b"err", is_error=True)
    del tasks[ret]
    assert status() == ("FAILED", 1)
    t.remove_local(ret)


def test_an_environment_built_by_the_agent_adds_its_build_to_the_workers_setup():
    r = Roster(Wall(), hidden=("GPU",))
    env = {"PIP": "spec", "WD": "abc"}
    r.env_built({"PIP": "bad"}, 50.0, "pip failed: no such package")
    failed = r.runtime_envs(NODE)
    assert [(e.env, e.success, e.workers, e.error) for e in failed] == [
        ({"PIP": "bad"}, False, 0, "pip failed: no such package")]  # listed with no worker, as Ray lists failures
    r.env_built({**env, "GPU": "1"}, 40.0, "")
    r.launching(b"w", tuple(sorted(env.items())))
    r.env_set_up(b"w", 2.0, "")
    built = next(e for e in r.runtime_envs(NODE) if e.env == env)
    assert (built.success, built.creation_ms, built.workers) == (True, 42.0, 1)
    r.exit(b"w", 0, "")
    assert [e.env for e in r.runtime_envs(NODE)] == [{"PIP": "bad"}]
