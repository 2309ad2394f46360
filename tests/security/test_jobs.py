"""Jobs over the head's REST API, on one real cluster (docs/jobs.md): a job that
runs tasks and prints, a failing one, stop and delete, logs followed (client and
CLI), the CLI's working_dir, and who may see and do what."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from .integrity_support import alive, cluster, wait_until

pytestmark = pytest.mark.timeout(300)

TASKS = """
import manta
manta.init()
@manta.remote
def square(x):
    return x * x
print("squares", sum(manta.get([square.remote(i) for i in range(10)])), flush=True)
print("namespace", manta.get_runtime_context().namespace, flush=True)
"""

OUTSIDE = """
import manta
manta.init()
@manta.remote
class A:
    pass
for ns in ("a", "b"):
    try:
        A.options(name="x", namespace=ns, lifetime="detached").remote()
        manta.get_actor("x", namespace=ns)
        print(ns, "ok", flush=True)
    except Exception as e:
        print(ns, "refused", type(e).__name__, flush=True)
"""


@pytest.fixture(scope="module")
def c():
    with cluster("jobs", "--num-cpus", "2", "--dashboard-port", "0") as c:
        c.extra["url"] = _dashboard(c)
        c.extra["view"] = _token(c, "view")
        c.extra["a"] = _token(c, "submit", "a")
        c.extra["b"] = _token(c, "submit", "b")
        yield c


def _dashboard(c) -> str:
    """The head's HTTP URL, from its node record."""
    for dirpath, _, files in os.walk(c.root):
        if "cluster.json" in files:
            with open(os.path.join(dirpath, "cluster.json")) as f:
                rec = json.load(f)
            if rec.get("dashboard_url"):
                return rec["dashboard_url"]
    raise AssertionError("no dashboard URL in the head's record")


def _token(c, role: str, namespace: str = "") -> str:
    args = ["token", "create", "--role", role] + (["--namespace", namespace] if namespace else [])
    return c.cli(*args).stdout.strip().splitlines()[-1]


def client(c, token: str | None = None):
    from manta.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    old = os.environ.get("MANTA_TMPDIR")
    os.environ["MANTA_TMPDIR"] = c.root  # where the owner's token is found when none is given
    try:
        return JobSubmissionClient(c.extra["url"], headers=headers)
    finally:
        if old is None:
            os.environ.pop("MANTA_TMPDIR")
        else:
            os.environ["MANTA_TMPDIR"] = old


def wait_status(cl, sid: str, want: set[str], timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        info = cl.get_job_info(sid)
        if info.status.value in want:
            return info
        assert time.monotonic() < deadline, f"job {sid} still {info.status.value}: {cl.get_job_logs(sid)}"
        time.sleep(0.1)


def group_alive(pgid: int) -> list[int]:
    """The living (not zombie) processes of process group `pgid`."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(name))
    return out


def http(c, method: str, path: str, token: str, body: object = None) -> tuple[int, dict]:
    req = urllib.request.Request(c.extra["url"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_job_runs_tasks_succeeds_and_its_logs_hold_its_output(c):
    cl = client(c)
    sid = cl.submit_job(entrypoint=f"{sys.executable} -c '{TASKS}'", metadata={"who": "test"},
                        runtime_env={"env_vars": {"JOB_FLAG": "on"}})
    assert sid.startswith("mantasubmit_")
    info = wait_status(cl, sid, {"SUCCEEDED", "FAILED"})
    logs = cl.get_job_logs(sid)
    assert info.status.value == "SUCCEEDED", logs
    assert "squares 285" in logs and info.driver_exit_code == 0 and info.metadata == {"who": "test"}
    assert info.start_time and info.end_time >= info.start_time
    assert sid in [j.submission_id for j in cl.list_jobs()]
    # Its driver's job id, as Ray gives it, finds it too; the state API shows it as a submission.
    assert info.job_id != sid and info.driver_info is not None and int(info.driver_info.pid) > 0
    assert cl.get_job_info(info.job_id).submission_id == sid
    listed = c.result("from manta.util import state\n"
                      "print(json.dumps([[j.type, j.submission_id] for j in state.list_jobs()]))")
    assert ["SUBMISSION", sid] in listed, listed
    actions = [r["action"] for r in c.audit_records() if r.get("target") == sid]
    assert "job.submit" in actions, actions


def test_a_failing_entrypoint_is_failed_with_its_exit_code(c):
    cl = client(c)
    sid = cl.submit_job(entrypoint=f"{sys.executable} -c 'import sys; print(\"bye\"); sys.exit(3)'")
    info = wait_status(cl, sid, {"SUCCEEDED", "FAILED"})
    assert info.status.value == "FAILED" and info.driver_exit_code == 3, info
    assert "exit code 3" in info.message
    assert cl.delete_job(sid) is True
    with pytest.raises(RuntimeError, match="404"):
        cl.get_job_info(sid)


def test_stop_ends_the_whole_process_group_and_delete_needs_an_ended_job(c):
    cl = client(c)
    # The entrypoint ignores SIGTERM and leaves a child: SIGKILL must follow, for the group.
    script = ("import os, signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "p = subprocess.Popen(['sleep', '600']); print('pgid', os.getpgrp(), p.pid, flush=True); time.sleep(600)")
    sid = cl.submit_job(entrypoint=f"{sys.executable} -c \"{script}\"")
    wait_until(lambda: "pgid" in cl.get_job_logs(sid), 60, "the job to start")
    pgid, child = map(int, re.search(r"pgid (\d+) (\d+)", cl.get_job_logs(sid)).groups())
    with pytest.raises(RuntimeError, match="400.*non-terminal"):
        cl.delete_job(sid)
    assert cl.stop_job(sid) is True
    info = wait_status(cl, sid, {"STOPPED", "FAILED", "SUCCEEDED"}, timeout=30)
    assert info.status.value == "STOPPED", info
    wait_until(lambda: not alive(child), 10, "the entrypoint's child to be gone")
    wait_until(lambda: not group_alive(pgid), 10, "the job's process group to be gone")
    assert cl.stop_job(sid) is False  # ended already
    assert cl.delete_job(sid) is True
    assert sid not in [j.submission_id for j in cl.list_jobs()]
    actions = [r["action"] for r in c.audit_records() if r.get("target") == sid]
    assert {"job.submit", "job.stop", "job.delete"} <= set(actions), actions


def test_logs_follow_as_they_are_written(c):
    cl = client(c)
    script = "import time\nfor i in range(4):\n    print(\"tick\", i, flush=True)\n    time.sleep(0.5)"
    sid = cl.submit_job(entrypoint=f"{sys.executable} -c '{script}'")

    async def follow() -> list[tuple[float, str]]:
        return [(time.monotonic(), chunk) async for chunk in cl.tail_job_logs(sid)]

    chunks = asyncio.run(follow())
    text = "".join(ch for _, ch in chunks)
    assert all(f"tick {i}" in text for i in range(4)), text
    assert len(chunks) >= 2 and chunks[-1][0] - chunks[0][0] > 0.5  # as they came, not all at the end
    assert wait_status(cl, sid, {"SUCCEEDED"}).status.value == "SUCCEEDED"


def test_the_cli_submits_a_working_dir_and_follows_it(c):
    with tempfile.TemporaryDirectory() as wd:
        with open(os.path.join(wd, "main.py"), "w") as f:
            f.write("import os, helper\nprint('helper says', helper.WORD, os.environ['JOB_FLAG'], flush=True)\n")
        with open(os.path.join(wd, "helper.py"), "w") as f:
            f.write("WORD = 'hello'\n")
        r = c.cli("job", "submit", "--address", c.extra["url"], "--working-dir", wd,
                  "--runtime-env-json", json.dumps({"env_vars": {"JOB_FLAG": "set"}}),
                  "--submission-id", "cli-job", "--", sys.executable, "main.py")
    assert "helper says hello set" in r.stdout and "Job 'cli-job' succeeded" in r.stdout, r.stdout + r.stderr
    assert "SUCCEEDED" in c.cli("job", "status", "--address", c.extra["url"], "cli-job").stdout
    assert "helper says" in c.cli("job", "logs", "--address", c.extra["url"], "cli-job").stdout
    assert "helper says" in c.cli("job", "logs", "--follow", "--address", c.extra["url"], "cli-job").stdout
    listed = c.cli("job", "list", "--address", c.extra["url"]).stdout
    assert "cli-job" in listed
    failed = c.cli("job", "submit", "--address", c.extra["url"], "--", "false", check=False)
    assert failed.returncode == 1 and "failed" in failed.stdout
    assert "deleted" in c.cli("job", "delete", "--address", c.extra["url"], "cli-job").stdout


def test_bad_input_is_a_400_naming_the_field(c):
    owner = client(c)._headers["Authorization"].split()[1]
    for body, field in (({}, "entrypoint"), ({"entrypoint": "x", "entrypoint_num_cpus": -1}, "entrypoint_num_cpus"),
                        ({"entrypoint": "x", "metadata": {"a": 1}}, "metadata"),
                        ({"entrypoint": "x", "surprise": 1}, "surprise"),
                        ({"entrypoint": "x", "runtime_env": {"working_dir": "/etc"}}, "working_dir")):
        status, said = http(c, "POST", "/api/jobs/", owner, body)
        assert status == 400 and field in said["message"], (body, said)


def test_a_view_token_cannot_submit_and_a_namespace_sees_only_its_jobs(c):
    status, said = http(c, "POST", "/api/jobs/", c.extra["view"], {"entrypoint": "true"})
    assert status == 403, said
    a, b = client(c, c.extra["a"]), client(c, c.extra["b"])
    sid = b.submit_job(entrypoint="true")
    assert b.get_job_info(sid).namespace == "b"
    with pytest.raises(RuntimeError, match="404"):
        a.get_job_info(sid)
    with pytest.raises(RuntimeError, match="404"):
        a.stop_job(sid)
    assert sid not in [j.submission_id for j in a.list_jobs()]
    assert sid in [j.submission_id for j in client(c, c.extra["view"]).list_jobs()]  # a view token of every namespace
    status, said = http(c, "POST", "/api/jobs/", c.extra["a"], {"entrypoint": "true", "namespace": "b"})
    assert status == 403 and "namespace 'b'" in said["message"], said
    wait_status(b, sid, {"SUCCEEDED"})


def test_a_jobs_driver_acts_as_its_submitter_only_in_its_namespace(c):
    a = client(c, c.extra["a"])
    sid = a.submit_job(entrypoint=f"{sys.executable} -c '{OUTSIDE}'")
    info = wait_status(a, sid, {"SUCCEEDED", "FAILED"})
    logs = a.get_job_logs(sid)
    assert info.status.value == "SUCCEEDED", logs
    assert "a ok" in logs and "b refused AuthorizationError" in logs, logs
    # Its driver presented the submitter's token, not the cluster's credential.
    logins = [r for r in c.audit_records() if r["action"] == "job.start" and r["namespace"] == "a"]
    assert logins and all(r["role"] == "submit" for r in logins), logins


def test_entrypoint_resources_keep_a_job_pending_until_they_are_reserved(c):
    cl = client(c)
    first = cl.submit_job(entrypoint="sleep 2", entrypoint_num_cpus=2)  # every CPU of the cluster
    wait_status(cl, first, {"RUNNING"})
    second = cl.submit_job(entrypoint="echo second", entrypoint_num_cpus=1)
    time.sleep(0.5)
    assert cl.get_job_status(second).value == "PENDING"
    never = cl.submit_job(entrypoint="echo never", entrypoint_resources={"no_such_thing": 1})
    done = wait_status(cl, second, {"SUCCEEDED", "FAILED"})
    assert done.status.value == "SUCCEEDED" and done.end_time >= cl.get_job_info(first).end_time
    assert cl.get_job_status(never).value == "PENDING"
    assert cl.stop_job(never) is True
    assert wait_status(cl, never, {"STOPPED"}).status.value == "STOPPED"
    assert "never" not in cl.get_job_logs(never)


def test_rays_package_names_are_the_uploaders_own(c):
    """Ray's clients upload a working_dir as gcs://_ray_pkg_<hash>.zip, a hash not of the zip's
    bytes: the name is kept per token, so no other token can plant code under it."""
    import io
    import zipfile

    def upload(token: str, text: str) -> int:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("m.py", text)
        req = urllib.request.Request(c.extra["url"] + "/api/packages/gcs/_ray_pkg_0123abcd.zip", method="PUT",
                                     data=buf.getvalue(), headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status

    def exists(token: str) -> bool:
        req = urllib.request.Request(c.extra["url"] + "/api/packages/gcs/_ray_pkg_0123abcd.zip",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30):
                return True
        except urllib.error.HTTPError as e:
            assert e.code == 404
            return False

    assert upload(c.extra["b"], "print('planted by b')") == 200
    assert not exists(c.extra["a"])  # a's client would upload its own
    assert upload(c.extra["a"], "print('a s own code')") == 200
    assert exists(c.extra["a"])
    a = client(c, c.extra["a"])
    sid = a.submit_job(entrypoint=f"{sys.executable} m.py", runtime_env={"working_dir": "gcs://_ray_pkg_0123abcd.zip"})
    assert wait_status(a, sid, {"SUCCEEDED", "FAILED"}).status.value == "SUCCEEDED"
    assert "a s own code" in a.get_job_logs(sid) and "planted" not in a.get_job_logs(sid)
    assert a.get_job_info(sid).runtime_env["working_dir"].startswith("manta://_manta_pkg_")


def test_over_tls_the_client_checks_the_clusters_ca():
    from manta.job_submission import JobSubmissionClient

    with cluster("jobs-tls", "--num-cpus", "1", "--dashboard-port", "0", "--tls", "on") as t:
        url = _dashboard(t)
        assert url.startswith("https://")
        old = os.environ.get("MANTA_TMPDIR")
        os.environ["MANTA_TMPDIR"] = t.root  # this machine's record holds the CA the client trusts
        try:
            cl = JobSubmissionClient(url)
            sid = cl.submit_job(entrypoint=f"{sys.executable} -c '{TASKS}'")
            assert wait_status(cl, sid, {"SUCCEEDED", "FAILED"}).status.value == "SUCCEEDED", cl.get_job_logs(sid)
            assert "squares 285" in cl.get_job_logs(sid)
        finally:
            if old is None:
                os.environ.pop("MANTA_TMPDIR")
            else:
                os.environ["MANTA_TMPDIR"] = old
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            JobSubmissionClient(url)  # elsewhere, with only the system's CAs: refused


def test_a_pending_job_whose_token_was_revoked_never_starts(c):
    owner = client(c)
    token = _token(c, "submit")
    blocker = owner.submit_job(entrypoint="sleep 2", entrypoint_num_cpus=2)
    wait_status(owner, blocker, {"RUNNING"})
    mine = client(c, token)
    sid = mine.submit_job(entrypoint="echo started anyway", entrypoint_num_cpus=1)
    c.cli("token", "revoke", token.split(".")[1])
    info = wait_status(owner, sid, {"FAILED", "SUCCEEDED"})
    assert info.status.value == "FAILED" and "no longer valid" in info.message, info
    assert "started anyway" not in owner.get_job_logs(sid)
