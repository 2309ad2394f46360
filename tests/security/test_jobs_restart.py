"""Submitted jobs across a head killed and restarted on Redis (docs/jobs.md):
records come back, a running job is watched again to its end, and one whose
process was lost meanwhile is FAILED with a clear message."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest
from chaos.chaos_support import RedisServer

from .redis_support import LocalCluster, free_port

pytestmark = pytest.mark.timeout(240)


def wait_status(cl, sid, want, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = cl.get_job_info(sid)
            if info.status.value in want:
                return info
        except (ConnectionError, RuntimeError):
            pass  # the head is not back yet
        assert time.monotonic() < deadline, f"job {sid} not {want}"
        time.sleep(0.1)


def runner_of(cluster: LocalCluster, sid: str) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "manta._private.head.jobs.runner" in cmd and cmd.endswith(os.path.join("jobs", sid)):
            return p
    raise AssertionError(f"no runner for {sid}")


def test_job_records_survive_a_head_restart_and_running_jobs_are_watched_again():
    from manta.job_submission import JobSubmissionClient

    with RedisServer() as redis, LocalCluster("jobs-r", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port, dport = free_port(), free_port()
        cluster.start_head("--num-cpus", "1", "--storage", redis.url, "--dashboard-port", str(dport), port=port)
        url = f"http://127.0.0.1:{dport}"
        cl = JobSubmissionClient(url, token_file=cluster.token_file)
        done = cl.submit_job(entrypoint="echo finished before", submission_id="before")
        wait_status(cl, done, {"SUCCEEDED"})
        slow = cl.submit_job(entrypoint=f"{sys.executable} -c 'import time; time.sleep(6); print(\"survived\")'",
                             submission_id="slow")
        doomed = cl.submit_job(entrypoint="sleep 600", submission_id="doomed")
        wait_status(cl, slow, {"RUNNING"})
        wait_status(cl, doomed, {"RUNNING"})
        doomed_runner = runner_of(cluster, doomed)

        os.kill(cluster.head_pid(), signal.SIGKILL)
        os.killpg(doomed_runner.pid, signal.SIGKILL)  # lost while the head is away: no exit code left
        out = cluster.cli("start", "--head", "--port", str(port), "--storage", redis.url,
                          "--dashboard-port", str(dport))
        assert "restarted" in out, out

        cl = JobSubmissionClient(url, token_file=cluster.token_file)
        assert cl.get_job_info(done).status.value == "SUCCEEDED"
        assert "finished before" in cl.get_job_logs(done)
        lost = wait_status(cl, doomed, {"FAILED"})
        assert "head restarted" in lost.message, lost
        info = wait_status(cl, slow, {"SUCCEEDED", "FAILED"}, timeout=60)
        assert info.status.value == "SUCCEEDED" and "survived" in cl.get_job_logs(slow), info
