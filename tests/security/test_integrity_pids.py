"""Pids from peers: a process registers with its node's agent only as itself.

The agent SIGKILLs a worker's pid when its actor is killed or its job ends,
and it used to take the pid from the worker's own registration. A malicious
actor registers again, claiming the pid of a `sleep` the test started (any
process of the same user would do), then gets itself killed: the old agent
killed the `sleep`. Now the agent checks the claim against the kernel's
record of who connected its Unix socket (SO_PEERCRED) and against the pid
the fork server reported, and refuses it; the `sleep` lives, and the actor's
real worker is the one that dies.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from integrity_support import alive, wait_until  # noqa: E402
from integrity_support import cluster as start_cluster  # noqa: E402
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux's"),
    pytest.mark.timeout(180),
]


def test_a_worker_claiming_another_processs_pid_is_refused_and_that_process_is_not_killed():
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        with start_cluster("pid", "--num-cpus", "2") as c:
            out = c.result(f"""
                from manta._private import session
                from manta._private.protocol import messages as m

                def claim(rt, kind, pid):
                    try:
                        rt.call_agent(m.RegisterClient(kind=kind, worker_id=rt.worker_id, job_id=rt.job_id,
                                                       pid=pid, address=rt.address))
                        return ["registered", ""]
                    except Exception as e:
                        return [type(e).__name__, str(e)]

                @manta.remote
                class Mole:
                    def claim(self, pid):
                        from manta._private.runtime import context
                        return os.getpid(), claim(context.require(), m.ClientKind.WORKER, pid)

                mole = Mole.remote()
                worker_pid, as_worker = manta.get(mole.claim.remote({bystander.pid}))
                as_driver = claim(session.current().rt, m.ClientKind.DRIVER, {bystander.pid})
                # Registering again as itself is still allowed (nothing to refuse).
                again = claim(session.current().rt, m.ClientKind.DRIVER, os.getpid())
                manta.kill(mole)
                print(json.dumps([worker_pid, as_worker, as_driver, again]))
            """)
            worker_pid, as_worker, as_driver, again = out
            for kind, text in (as_worker, as_driver):
                assert kind == "AuthorizationError", out
                assert f"claimed pid {bystander.pid}" in text, text
            assert again[0] == "registered", out
            # The agent killed the actor's real worker, and only it.
            wait_until(lambda: not alive(worker_pid), 30, f"the actor's worker {worker_pid} to be killed")
            assert bystander.poll() is None, "the agent killed a process it was told was its worker"
            # The cluster goes on serving.
            assert c.result("print(json.dumps(manta.get(manta.remote(lambda: 7).remote())))") == 7
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
