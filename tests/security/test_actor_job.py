"""An actor works for the job that made it, whoever calls it.

A caller of another job (allowed in the actor's namespace) must not turn the
actor's follow-up work into its own job's: the actor's pass names its
creator's job, so leases asked for the caller's job would be refused, and in
Ray what an actor starts belongs to the actor's job.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own principals"),
    pytest.mark.timeout(180),
]

SERVICE = """
import manta
manta.init(address="auto", namespace="shared")

@manta.remote
def job_of():
    return manta.get_runtime_context().get_job_id()

@manta.remote
class Svc:
    def spawn(self):
        # A task and a nested actor, started from a method.
        helper = Svc2.remote()
        return [manta.get(job_of.remote()), manta.get(helper.job.remote()),
                manta.get_runtime_context().get_job_id()]

@manta.remote
class Svc2:
    def job(self):
        return manta.get_runtime_context().get_job_id()

svc = Svc.options(name="svc", lifetime="detached").remote()
print("RESULT", manta.get_runtime_context().get_job_id(), manta.get(svc.spawn.remote()))
"""

CALLER = """
import manta
manta.init(address="auto", namespace="shared")
print("RESULT", manta.get_runtime_context().get_job_id(),
      manta.get(manta.get_actor("svc").spawn.remote(), timeout=60))
"""


def _run(env, code):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, r.stdout + r.stderr
    return lines[-1].split(" ", 2)[1:]


def test_what_an_actor_starts_for_a_caller_of_another_job_is_its_creators_job():
    root = tempfile.mkdtemp(prefix="mtaj")
    env = {**os.environ, "MANTA_TMPDIR": root, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    cli = [sys.executable, "-m", "manta.cli"]
    subprocess.run([*cli, "start", "--head", "--port", "0", "--num-cpus", "4"], env=env, check=True,
                   capture_output=True, timeout=90)
    try:
        owner_job, seen = _run(env, SERVICE)
        caller_job, seen_by_caller = _run(env, CALLER)
        assert caller_job != owner_job
        assert seen == seen_by_caller == repr([owner_job] * 3)
    finally:
        subprocess.run([*cli, "stop"], env=env, capture_output=True, timeout=90)
        shutil.rmtree(root, ignore_errors=True)
