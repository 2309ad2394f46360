"""Workers as an unprivileged user (`manta start --worker-user nobody`): user code cannot read the session.

A malicious task goes for what the agent keeps on disk: the cluster token
(`<session>/token`), the agent's log, a listing of the session directory.
Each is refused with PermissionError. The task still works as tasks do: it
runs as `nobody`, puts and gets large objects through the store (whose
descriptor it inherited, as it could not open the agent's), calls an actor
in another worker and a nested task, over Unix sockets it can reach.

Needs root (the node changes uids), a `nobody` user, and a Python whose
standard library `nobody` can read (the node refuses to start otherwise: a
worker imports after it dropped to that user). Where the test's own Python
lives under /root, the system's Python of the same version runs the
cluster, with this environment's packages on its path.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from tests_support import BACKEND  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _nobody():
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def _python():
    """A Python of this version whose standard library and packages nobody can read, or None."""
    from manta._private.node.worker_user import can_read_dir

    nobody = _nobody()
    if nobody is None:
        return None
    from manta._private.node.worker_user import WorkerUser

    user = WorkerUser("nobody", nobody.pw_uid, nobody.pw_gid)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(python):
            continue
        stdlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                                capture_output=True, text=True).stdout.strip()
        if stdlib and all(can_read_dir(p, user) for p in (stdlib, sysconfig.get_paths()["purelib"], REPO_ROOT)):
            return python
    return None


PYTHON = _python() if os.geteuid() == 0 else None

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI"),
    pytest.mark.skipif(os.geteuid() != 0, reason="--worker-user needs the node to run as root"),
    pytest.mark.skipif(_nobody() is None, reason="this machine has no user 'nobody'"),
    pytest.mark.skipif(PYTHON is None, reason=f"no Python {sys.version_info.major}.{sys.version_info.minor} here "
                       "whose standard library the user nobody can read"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="wu")
    # This environment's packages, on the path of whichever Python runs the cluster.
    path = [REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")]), sysconfig.get_paths()["purelib"]]
    env = {**os.environ, "MANTA_TMPDIR": root, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    try:
        cli(env, "start", "--head", "--port", "0", "--num-cpus", "2", "--worker-user", "nobody", "--dashboard-port", "0")
        yield env, root
    finally:
        subprocess.run([PYTHON, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def cli(env, *args):
    out = subprocess.run([PYTHON, "-m", "manta.cli", *args], env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def run_driver(env, body, *args):
    script = "import glob, json, os, sys\nimport manta\nmanta.init(address='auto')\n" + textwrap.dedent(body)
    proc = subprocess.run([PYTHON, "-c", script, *args], env=env, text=True, capture_output=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_task_cannot_read_the_token_the_logs_or_the_session(cluster):
    env, root = cluster
    session = next(os.path.join(root, d) for d in os.listdir(root) if d.startswith("s"))
    out = run_driver(env, f"""
        @manta.remote
        def attack(session):
            tried = {{}}
            for what, act in [
                ("token", lambda: open(os.path.join(session, "token")).read()),
                ("agent log", lambda: open(os.path.join(session, "logs", "agent.log")).read()),
                ("logs", lambda: os.listdir(os.path.join(session, "logs"))),
                ("session", lambda: os.listdir(session)),
                ("sockets", lambda: os.listdir(os.path.join(session, "sockets"))),
                ("agent store", lambda: os.open("/proc/%d/fd/0" % os.getppid(), os.O_RDONLY)),
            ]:
                try:
                    act()
                    tried[what] = "read"
                except PermissionError:
                    tried[what] = "PermissionError"
                except OSError as e:
                    tried[what] = type(e).__name__
            return os.getuid(), os.getgid(), tried

        print(json.dumps(manta.get(attack.remote({session!r}), timeout=60)))
    """)
    uid, gid, tried = out
    assert (uid, gid) == (_nobody().pw_uid, _nobody().pw_gid)
    for what in ("token", "agent log", "logs", "session", "sockets"):
        assert tried[what] == "PermissionError", tried
    assert tried["agent store"] != "read", tried


def test_a_worker_as_nobody_still_uses_the_store_actors_nested_tasks_and_working_dir(cluster, tmp_path):
    env, _ = cluster
    (tmp_path / "shipped.py").write_text("VALUE = 'from the working dir'\n")
    out = run_driver(env, """
        import numpy as np

        @manta.remote
        class Tally:
            def __init__(self):
                self.seen = []
            def note(self, k):
                self.seen.append(k)
                return sum(self.seen), os.getuid()

        @manta.remote
        def inner(x):
            return x + 1

        @manta.remote
        def outer(big, tally):
            # Large objects both ways go through the store's shared memory.
            mine = manta.put(np.full(4 << 20, 7, dtype=np.uint8))
            total = int(big.sum()) + int(manta.get(mine).sum())
            return total, manta.get(inner.remote(1)), manta.get(tally.note.remote(5)), os.getuid()

        big = np.ones(8 << 20, dtype=np.uint8)
        c = Tally.remote()
        total, nested, added, uid = manta.get(outer.remote(big, c), timeout=90)
        back = manta.get(manta.remote(lambda: np.arange(1 << 20)).remote(), timeout=60)

        # A working_dir is unpacked by the worker, as nobody, where it may write.
        @manta.remote(runtime_env={"working_dir": sys.argv[1]})
        def from_working_dir():
            import shipped
            return shipped.VALUE

        print(json.dumps([total, nested, added, uid, int(back[-1]), manta.get(from_working_dir.remote(), timeout=60)]))
    """, str(tmp_path))
    total, nested, added, uid, last, shipped = out
    assert shipped == "from the working dir"
    nobody = _nobody().pw_uid
    assert total == (8 << 20) + 7 * (4 << 20)
    assert nested == 2
    assert added == [5, nobody]
    assert uid == nobody
    assert last == (1 << 20) - 1


ENTRYPOINT = """
import json, os, sys
import numpy as np
import manta

tried = {}
for what, path in [("token", sys.argv[1] + "/token"), ("tls key", sys.argv[1] + "/tls/node.key"),
                   ("head log", sys.argv[1] + "/logs/head.log")]:
    try:
        open(path).read()
        tried[what] = "read"
    except OSError as e:
        tried[what] = type(e).__name__
manta.init()

@manta.remote(resources=json.loads(sys.argv[2]))
def total(a):
    return int(a.sum()), os.getuid()

big = manta.put(np.ones(16 << 20, dtype=np.uint8))
s, worker_uid = manta.get(total.remote(big), timeout=60)
back = manta.get(manta.remote(resources=json.loads(sys.argv[2]))(lambda: np.full(8 << 20, 3, dtype=np.uint8))
                 .remote(), timeout=60)
print("RESULT", json.dumps([os.getuid(), worker_uid, s, int(back.sum()), tried]), flush=True)
"""


def test_a_job_entrypoint_runs_as_nobody_and_drives_its_job_through_what_it_was_handed(cluster, tmp_path):
    """A submitted entrypoint is user code: as the worker user it cannot read the
    session's secrets, yet its driver puts and gets large objects through the
    store descriptor the head handed it, and runs tasks."""
    env, root = cluster
    session = next(os.path.join(root, d) for d in os.listdir(root) if d.startswith("s"))
    tried = submit_entrypoint(env, session, tmp_path, {})
    assert tried == {"token": "PermissionError", "tls key": "FileNotFoundError", "head log": "PermissionError"}


def submit_entrypoint(env, session, wd, resources):
    """Submits ENTRYPOINT as a job and checks what it did; returns what it could read."""
    with open(os.path.join(session, "cluster.json")) as f:
        url = json.load(f)["dashboard_url"]
    (wd / "main.py").write_text(ENTRYPOINT)
    out = subprocess.run([PYTHON, "-m", "manta.cli", "job", "submit", "--address", url, "--working-dir",
                          str(wd), "--", PYTHON, "main.py", session, json.dumps(resources)], env=env,
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    uid, worker_uid, s, back, tried = json.loads(line[len("RESULT "):])
    nobody = _nobody().pw_uid
    assert uid == nobody and worker_uid == nobody
    assert s == 16 << 20 and back == 3 * (8 << 20)
    return tried


def test_a_wrong_worker_user_fails_the_start(tmp_path):
    env = {**os.environ, "MANTA_TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0",
                          "--worker-user", "no-such-user-here"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no such user" in out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0",
                          "--worker-user", "root"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unprivileged" in out.stdout + out.stderr


def test_workers_as_nobody_write_their_logs_and_stacks_which_only_the_agent_lists(cluster):
    env, root = cluster
    session = next(os.path.join(root, d) for d in os.listdir(root) if d.startswith("s"))
    out = run_driver(env, f"""
        @manta.remote
        def speak(session):
            print("spoken-as-nobody")
            try:
                os.listdir(os.path.join(session, "worker_logs"))
                listed = "listed"
            except PermissionError:
                listed = "PermissionError"
            return listed

        ref = speak.remote({session!r})
        print(json.dumps([manta.get(ref, timeout=60), ref.task_id().hex()]))
    """)
    listed, task = out
    assert listed == "PermissionError"
    files = [f for f in os.listdir(os.path.join(session, "worker_logs")) if f.endswith(".out")]
    assert files and all(os.stat(os.path.join(session, "worker_logs", f)).st_uid == _nobody().pw_uid for f in files)
    for _ in range(50):  # the task's record reaches the head in its owner's next batch
        got = subprocess.run([PYTHON, "-m", "manta.cli", "logs", "--task-id", task], env=env, capture_output=True,
                             text=True, timeout=60)
        if got.returncode == 0:
            break
    assert "spoken-as-nobody" in got.stdout, got.stdout + got.stderr
    stacks = cli(env, "stack", "--method", "faulthandler")
    assert "by faulthandler" in stacks and "Thread" in stacks


def test_workers_as_nobody_talk_tls_across_nodes_without_reading_the_key(tmp_path):
    """Two nodes with `--tls on` and workers as nobody: a worker reaches the
    driver and the other node over TLS with the certificate its fork server
    read for it, while the key's file stays closed to it; so does a job's
    entrypoint with the certificate the head handed it."""
    roots = [tempfile.mkdtemp(prefix="wut"), tempfile.mkdtemp(prefix="wut")]  # where nobody may pass
    path = os.pathsep.join([REPO_ROOT, sysconfig.get_paths()["purelib"]])
    envs = []
    for r in roots:
        env = {**os.environ, "MANTA_TMPDIR": str(r), "PYTHONPATH": path}
        env.pop("MANTA_TOKEN", None)
        env.pop("MANTA_ADDRESS", None)
        envs.append(env)
    try:
        out = subprocess.run([PYTHON, "-m", "manta.cli", "start", "--head", "--port", "0", "--num-cpus", "1",
                              "--tls", "on", "--worker-user", "nobody"], env=envs[0], capture_output=True,
                             text=True, timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr
        fingerprint = next(w for w in (out.stdout + out.stderr).split() if w.startswith("sha256:"))
        (session,) = [os.path.join(roots[0], d) for d in os.listdir(roots[0])]
        with open(os.path.join(session, "cluster.json")) as f:
            address = json.load(f)["head_address"].partition(":")[2]
        cli(envs[1], "start", "--address", address, "--token-file", os.path.join(session, "token"), "--num-cpus",
            "1", "--resources", '{"B": 1}', "--tls", "on", "--ca-hash", fingerprint, "--worker-user", "nobody")
        (node_session,) = [os.path.join(roots[1], d) for d in os.listdir(roots[1])]
        got = run_driver(envs[0], f"""
            import numpy as np

            @manta.remote(resources={{"B": 1}})
            def make():
                return np.ones(5_000_000, dtype=np.uint8)

            @manta.remote
            def total(a):
                return int(a.sum())

            @manta.remote(resources={{"B": 1}})
            def square(x):
                try:
                    open({os.path.join(node_session, "tls", "node.key")!r}).read()
                    key = "read"
                except PermissionError:
                    key = "PermissionError"
                return x * x, key, os.getuid()

            squares = manta.get([square.remote(i) for i in range(10)], timeout=90)
            print(json.dumps([[s[0] for s in squares], sorted({{s[1] for s in squares}}), squares[0][2],
                              manta.get(total.remote(make.remote()), timeout=90)]))
        """)
        tried = submit_entrypoint(envs[0], session, tmp_path, {"B": 1})
    finally:
        for env in reversed(envs):
            subprocess.run([PYTHON, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
    squares, key, uid, total = got
    assert squares == [i * i for i in range(10)]
    assert key == ["PermissionError"] and uid == _nobody().pw_uid
    assert total == 5_000_000
    assert tried == {"token": "PermissionError", "tls key": "PermissionError", "head log": "PermissionError"}
