"""The head's job table: status transitions, stop escalation, ids (sans-IO, a fake clock)."""

from __future__ import annotations

import signal

import pytest

from manta._private.head.jobs.table import (
    FAILED,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    IllegalTransition,
    JobError,
    JobRecord,
    JobTable,
    Signal,
    check_submission_id,
    new_submission_id,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def table():
    t = JobTable(Clock(), stop_timeout_s=3.0, max_jobs=3)
    yield t
    t.validate()


def running(table: JobTable, sid: str = "a", pid: int = 42) -> None:
    table.submit(JobRecord(submission_id=sid, entrypoint="echo hi"))
    table.started(sid, pid, 1.0)


def test_a_job_runs_then_succeeds_with_ray_messages(table):
    rec = table.submit(JobRecord(submission_id="a", entrypoint="echo hi"))
    assert rec.status is PENDING and rec.message == "Job has not started yet." and rec.start_time == 1_000_000
    assert table.started("a", 42, 1.0).status is RUNNING
    table.clock.t += 2
    done = table.exited("a", 0)
    assert (done.status, done.driver_exit_code, done.end_time) == (SUCCEEDED, 0, 1_002_000)
    assert done.message == "Job finished successfully."


def test_a_failing_entrypoint_is_failed_with_its_code_or_signal(table):
    running(table, "a")
    rec = table.exited("a", 3)
    assert rec.status is FAILED and rec.driver_exit_code == 3 and "exit code 3" in rec.message
    running(table, "b")
    assert "SIGSEGV" in table.exited("b", -signal.SIGSEGV).message
    running(table, "c")
    assert "without reporting" in table.exited("c", None).message


def test_stop_sends_sigterm_then_sigkill_after_the_timeout(table):
    running(table, "a", pid=7)
    stopped, sent = table.stop("a")
    assert stopped and sent == [Signal("a", 7, signal.SIGTERM)]
    assert table.stop("a") == (True, [])  # asked again: nothing more is sent
    assert table.next_tick() == 3.0
    table.clock.t += 2.9
    assert table.tick() == []
    table.clock.t += 0.2
    assert table.tick() == [Signal("a", 7, signal.SIGKILL)]
    assert table.tick() == [] and table.next_tick() is None
    rec = table.exited("a", -signal.SIGKILL)
    assert rec.status is STOPPED and rec.message == "Job was intentionally stopped."
    assert table.stop("a") == (False, [])  # ended: stopping it again stops nothing


def test_a_pending_job_stops_at_once(table):
    table.submit(JobRecord(submission_id="a", entrypoint="x"))
    assert table.stop("a") == (True, [])
    assert table.get("a").status is STOPPED
    with pytest.raises(IllegalTransition):
        table.started("a", 1, 1.0)  # a reservation granted too late starts nothing


def test_delete_only_when_ended_and_unknown_ids_are_404(table):
    running(table, "a")
    with pytest.raises(JobError, match="non-terminal state RUNNING") as e:
        table.delete("a")
    assert e.value.status == 400
    table.exited("a", 0)
    table.delete("a")
    with pytest.raises(JobError, match="does not exist") as e:
        table.get("a")
    assert e.value.status == 404


def test_ids_are_unique_checked_and_ray_like(table):
    sid = new_submission_id()
    assert sid.startswith("mantasubmit_") and len(sid) == len("mantasubmit_") + 16
    table.submit(JobRecord(submission_id="a", entrypoint="x"))
    with pytest.raises(JobError, match="already exists"):
        table.submit(JobRecord(submission_id="a", entrypoint="x"))
    for bad in ("", "a b", "x" * 200, "../etc"):
        with pytest.raises(JobError, match="submission_id"):
            check_submission_id(bad)


def test_the_oldest_ended_jobs_make_room_but_unfinished_ones_never_go(table):
    for sid in "abc":
        running(table, sid)
    with pytest.raises(JobError) as e:
        table.submit(JobRecord(submission_id="d", entrypoint="x"))
    assert e.value.status == 429
    table.exited("b", 0)
    table.clock.t += 1
    table.exited("a", 0)
    table.submit(JobRecord(submission_id="d", entrypoint="x"))
    assert sorted(table.jobs) == ["a", "c", "d"] and table.forgotten == ["b"]  # b ended first, so it went


def test_a_job_lost_with_the_head_fails_clearly(table):
    running(table, "a")
    rec = table.lost("a", "The head restarted and the job's entrypoint process was gone.")
    assert rec.status is FAILED and "head restarted" in rec.message


def test_needs_uses_rays_resource_names():
    rec = JobRecord(submission_id="a", entrypoint="x", entrypoint_num_cpus=1, entrypoint_num_gpus=0.5,
                    entrypoint_memory=100, entrypoint_resources={"disk": 2})
    assert rec.needs() == {"CPU": 1.0, "GPU": 0.5, "memory": 100.0, "disk": 2.0}


def test_submissions_are_checked_field_by_field():
    from manta._private.head.http.jobs import parse_submit

    rec = parse_submit({"entrypoint": "python x.py", "submission_id": "mine", "entrypoint_num_cpus": 1,
                        "entrypoint_memory": 10, "metadata": {"a": "b"}, "runtime_env": {"env_vars": {"K": "V"}}})
    assert (rec.submission_id, rec.entrypoint_num_cpus, rec.entrypoint_memory) == ("mine", 1.0, 10)
    assert parse_submit({"entrypoint": "x"}).submission_id.startswith("mantasubmit_")
    for body, field in (
        ([], "JSON object"), ({}, "entrypoint"), ({"entrypoint": " "}, "entrypoint"),
        ({"entrypoint": "x", "entrypoint_num_gpus": float("inf")}, "entrypoint_num_gpus"),
        ({"entrypoint": "x", "entrypoint_num_cpus": True}, "entrypoint_num_cpus"),
        ({"entrypoint": "x", "entrypoint_memory": 1.5}, "entrypoint_memory"),
        ({"entrypoint": "x", "entrypoint_resources": {"CPU": 1}}, "entrypoint_resources"),
        ({"entrypoint": "x", "runtime_env": {"env_vars": {"MANTA_TOKEN": "t"}}}, "MANTA_TOKEN"),
        ({"entrypoint": "x", "runtime_env": {"working_dir": "/home/me"}}, "working_dir"),
        ({"entrypoint": "x", "submission_id": "a/b"}, "submission_id"),
        ({"entrypoint": "x", "namespce": "typo"}, "namespce"),
    ):
        with pytest.raises(JobError, match=field) as e:
            parse_submit(body)
        assert e.value.status == 400


def test_who_sees_a_job():
    from manta._private.head.jobs.supervisor import may_see
    from manta._private.protocol.identity import Kind, Principal, Role

    def person(role, namespaces=(), token="t1"):
        return Principal(kind=Kind.PERSON, role=role, name="p", namespaces=namespaces, token_id=token)

    job = JobRecord(submission_id="a", entrypoint="x", namespace="b", token_id="t2")
    assert may_see(person(Role.VIEW), job)  # a token of every namespace
    assert may_see(person(Role.VIEW, ("b",)), job)
    assert not may_see(person(Role.SUBMIT, ("a",)), job)
    assert may_see(person(Role.SUBMIT, ("a",), token="t2"), job)  # its own
    assert may_see(person(Role.ADMIN, ("a",)), job)


def test_the_runners_log_rotates_keeping_one_older_part(tmp_path):
    from manta._private.head.jobs.runner import RotatingLog

    path = str(tmp_path / "job.log")
    log = RotatingLog(path, max_bytes=10)
    for chunk in (b"12345", b"6789", b"abcdef", b"ghijklmno", b"p"):
        log.write(chunk)
    log.close()
    assert open(path + ".1", "rb").read() == b"abcdef"  # what came before it is gone
    assert open(path, "rb").read() == b"ghijklmnop"  # at most max_bytes each
