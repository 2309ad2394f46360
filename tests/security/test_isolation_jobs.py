"""Workers are never shared between jobs: an attack through a reused worker.

Job A's task leaves traces in its worker the way a malicious or careless
task would (a module global, an environment variable, a file in a working
directory it moved to); job B's tasks then run on the same one-CPU node,
where the old pool would have handed them A's idle worker, and look for
them. Two drivers connect to one long-lived cluster (`manta start --head`),
as two users' programs would.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from integrity_support import alive, wait_until  # noqa: E402
from tests_support import BACKEND, manta_cli  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="iso")
    env = {**os.environ, "MANTA_TMPDIR": root,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    try:
        # One CPU: job B's tasks can only run where job A's task ran, or on a new worker.
        manta_cli(env, "start", "--head", "--port", "0", "--num-cpus", "1")
        yield env, root
    finally:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def driver(env, body, *args, **kw):
    script = "import json, os, sys\nimport manta\nmanta.init(address='auto')\n" + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out


def test_another_jobs_task_sees_nothing_a_job_left_in_its_worker(cluster):
    env, root = cluster
    scratch = tempfile.mkdtemp(prefix="a-cwd", dir=root)
    a = driver(env, """
        @manta.remote(num_cpus=1)
        def leave_traces(d):
            import json as j
            j.LEFT_BY_A = "secret-of-a"            # a module global
            os.environ["LEFT_BY_A"] = "secret-of-a"  # the worker's environment
            os.chdir(d)                              # a working directory, with a file in it
            with open("left_by_a.txt", "w") as f:
                f.write("secret-of-a")
            return os.getpid()

        print(manta.get(leave_traces.remote(sys.argv[1])), flush=True)
        sys.stdin.readline()  # job A stays alive, its worker idle, while job B runs
        manta.shutdown()
    """, scratch, stdin=subprocess.PIPE)
    try:
        a_worker = int(a.stdout.readline())
        b = driver(env, """
            @manta.remote(num_cpus=1)
            def look():
                import json as j
                return [os.getpid(), getattr(j, "LEFT_BY_A", None), os.environ.get("LEFT_BY_A"),
                        os.getcwd(), os.path.exists("left_by_a.txt")]

            print(json.dumps([manta.get(look.remote()) for _ in range(5)]))
            manta.shutdown()
        """)
        seen = json.loads(finish(b))
        assert all(pid != a_worker for pid, *_ in seen), "job B ran on job A's worker"
        for _, global_, environ, cwd, file_ in seen:
            assert global_ is None and environ is None and not file_ and cwd != scratch
        assert alive(a_worker), "job A's worker must stay while job A runs"
    finally:
        if a.poll() is None:
            a.stdin.write("\n")
            a.stdin.flush()
    finish(a)
    # Job A ended: its idle worker is stopped, not kept for anyone else.
    wait_until(lambda: not alive(a_worker), 30, f"job A's idle worker {a_worker} to stop when job A ended")
    # The cluster goes on serving new jobs.
    c = driver(env, """
        print(manta.get(manta.remote(lambda: "served").remote()))
        manta.shutdown()
    """)
    assert finish(c).strip() == "served"


def test_within_a_job_a_task_sees_what_an_earlier_one_left_in_its_worker_as_in_ray(cluster):
    """Ray keeps one job's workers for its tasks without resetting them: an
    environment variable a task set is still there for the job's next task
    on that worker. manta does the same within a job."""
    env, _ = cluster
    out = finish(driver(env, """
        @manta.remote(num_cpus=1)
        def set_it():
            os.environ["SET_BY_EARLIER_TASK"] = "yes"
            return os.getpid()

        @manta.remote(num_cpus=1)
        def read_it():
            return os.getpid(), os.environ.get("SET_BY_EARLIER_TASK")

        first = manta.get(set_it.remote())
        print(json.dumps([first, *manta.get(read_it.remote())]))
        manta.shutdown()
    """))
    first, again, value = json.loads(out)
    assert first == again and value == "yes"
