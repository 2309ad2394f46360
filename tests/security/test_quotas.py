"""Quotas, tried by the jobs they bound: a token's jobs together, and each job
of anyone, stop at their limits with a QuotaExceededError, while another job
goes on as before and the cluster keeps serving.
"""

import json
import os
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from tests_support import BACKEND  # noqa: E402

from tests.security.integrity_support import ATTEMPT  # noqa: E402
from tests.security.integrity_support import cluster as start_cluster  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own quotas"),
    pytest.mark.timeout(240),
]

PRELUDE = ATTEMPT + """
from manta.experimental import internal_kv

@manta.remote
class A:
    def ping(self):
        return "pong"
"""


@pytest.fixture(scope="module")
def cluster():
    # Every job, the owner's too, may keep at most 6 live actors and 100 MiB in a node's store.
    config = {"job_max_actors": 6, "job_max_store_bytes": 100 << 20}
    with start_cluster("mtq", "--num-cpus", "8", "--system-config", json.dumps(config)) as c:
        yield c


def driver(c, namespace, body, token=None):
    env = {**c.env, "MANTA_TOKEN": token} if token else c.env
    r = c.driver(PRELUDE + textwrap.dedent(body) + "\nprint('RESULT' + json.dumps(out))\n", env=env,
                 namespace=namespace)
    return json.loads(r.stdout.strip().splitlines()[-1][len("RESULT"):])


def _token(c, *args):
    return c.cli("token", "create", "--role", "submit", *args).stdout.strip().splitlines()[-1]


def test_a_tokens_jobs_together_stop_at_its_actor_and_cpu_quotas_and_others_go_on(cluster):
    c = cluster
    team = _token(c, "--namespace", "team", "--max-actors", "2", "--max-cpus", "3", "--note", "quota test")
    listed = c.cli("token", "list").stdout
    assert "actors 2" in listed and "cpus 3" in listed
    first = driver(c, "team", """
    a1 = A.options(name="a1", lifetime="detached").remote()
    attempt("a1", lambda: manta.get(a1.ping.remote(), timeout=30))
    a2 = A.options(num_cpus=2).remote()
    attempt("a2", lambda: manta.get(a2.ping.remote(), timeout=30))
    attempt("third", lambda: manta.get(A.remote().ping.remote(), timeout=30))
    manta.kill(a2)
    import time
    time.sleep(0.5)
    # Room again for one actor, but not for 4 CPUs of bundles beside a1's.
    attempt("after_kill", lambda: manta.get(A.remote().ping.remote(), timeout=30))
    attempt("pg_too_big", lambda: manta.util.placement_group([{"CPU": 2}, {"CPU": 2}]).ready())
    """, token=team)
    assert first["a1"] == first["a2"] == ["ok", "'pong'"]
    assert first["third"][0] == "QuotaExceededError", first["third"]
    assert "max_actors=2" in first["third"][1] and "token" in first["third"][1]
    assert first["after_kill"] == ["ok", "'pong'"], first["after_kill"]
    assert first["pg_too_big"][0] == "QuotaExceededError" and "max_cpus=3" in first["pg_too_big"][1]

    # A second job with the same token: its detached a1 still counts, so starting
    # more jobs does not get round the quota.
    second = driver(c, "team", """
    # Held: an actor whose handle is dropped ends, and no longer counts.
    held = [A.remote()]
    attempt("one", lambda: manta.get(held[0].ping.remote(), timeout=30))
    attempt("two", lambda: manta.get(A.remote().ping.remote(), timeout=30))
    """, token=team)
    assert second["one"] == ["ok", "'pong'"]
    assert second["two"][0] == "QuotaExceededError"

    # The owner's job is not bound by the token's quota (only by its own, 6).
    owner = driver(c, "team", """
    actors = [A.remote() for _ in range(5)]
    attempt("five", lambda: manta.get([a.ping.remote() for a in actors], timeout=60))
    attempt("seventh", lambda: [A.remote() for _ in range(2)] and manta.get(A.remote().ping.remote(), timeout=30))
    attempt("square", lambda: manta.get(manta.remote(lambda x: x * x).remote(7)))
    """)
    assert owner["five"][0] == "ok"
    assert owner["seventh"][0] == "QuotaExceededError" and "max_actors=6" in owner["seventh"][1]
    assert owner["square"] == ["ok", "49"]

    audit = c.cli("audit", "--json", "--path", c.audit).stdout
    refused = [json.loads(ln) for ln in audit.splitlines() if ln.strip()]
    assert any(r["outcome"] == "refused" and "quota max_actors=2" in r.get("detail", "") for r in refused)


def test_kv_bytes_are_charged_to_their_writer_and_freed_by_a_delete(cluster):
    c = cluster
    small = _token(c, "--namespace", "kvq", "--max-kv-bytes", "1000")
    seen = driver(c, "kvq", """
    put = lambda k, n: internal_kv._internal_kv_put(k, b"x" * n, namespace="kvq")
    attempt("fits", lambda: put(b"a", 600))
    attempt("too_much", lambda: put(b"b", 600))
    attempt("overwrite_smaller", lambda: put(b"a", 300))
    attempt("now_fits", lambda: put(b"b", 600))
    attempt("full_again", lambda: put(b"c", 200))
    attempt("delete", lambda: internal_kv._internal_kv_del(b"a", namespace="kvq"))
    attempt("after_delete", lambda: put(b"c", 200))
    attempt("read", lambda: len(internal_kv._internal_kv_get(b"b", namespace="kvq")))
    """, token=small)
    assert seen["fits"][0] == "ok"
    assert seen["too_much"][0] == "QuotaExceededError" and "max_kv_bytes=1000" in seen["too_much"][1]
    assert seen["overwrite_smaller"][0] == "ok"
    assert seen["now_fits"][0] == "ok"
    assert seen["full_again"][0] == "QuotaExceededError"
    assert seen["delete"][0] == "ok"
    assert seen["after_delete"][0] == "ok"
    assert seen["read"] == ["ok", "600"]


def test_store_bytes_stop_a_tokens_puts_and_returns_and_a_free_makes_room(cluster):
    c = cluster
    small = _token(c, "--namespace", "storeq", "--max-store-bytes", str(30 << 20))
    seen = driver(c, "storeq", """
    import numpy as np, time

    @manta.remote
    def big(n):
        return np.ones(n, dtype=np.uint8)

    first = manta.put(np.ones(20 << 20, dtype=np.uint8))
    attempt("second", lambda: manta.put(np.ones(20 << 20, dtype=np.uint8)))
    attempt("returned", lambda: manta.get(big.remote(20 << 20)).nbytes)
    attempt("small", lambda: manta.get(manta.put(np.ones(1 << 20, dtype=np.uint8))).nbytes)
    del first
    def after_free():
        for _ in range(100):  # the owner's free reaches the agent shortly
            try:
                return manta.get(manta.put(np.ones(20 << 20, dtype=np.uint8))).nbytes
            except manta.exceptions.QuotaExceededError:
                time.sleep(0.1)
        raise TimeoutError("the freed object's bytes were never released")
    attempt("after_free", after_free)
    """, token=small)
    assert seen["second"][0] == "QuotaExceededError", seen["second"]
    assert "max_store_bytes=31457280" in seen["second"][1] and "token" in seen["second"][1]
    assert seen["returned"][0] == "RayTaskError(QuotaExceededError)", seen["returned"]  # as Ray wraps a task's error
    assert seen["small"] == ["ok", str(1 << 20)]
    assert seen["after_free"] == ["ok", str(20 << 20)]
    # The owner's job is not bound by that token (60 MiB at once is fine), only
    # by every job's own 100 MiB.
    owner = driver(c, "storeq", """
    import numpy as np
    refs = [manta.put(np.ones(20 << 20, dtype=np.uint8)) for _ in range(3)]
    attempt("three", lambda: sum(a.nbytes for a in manta.get(refs)))
    attempt("past_own", lambda: manta.put(np.ones(50 << 20, dtype=np.uint8)))
    """)
    assert owner["three"] == ["ok", str(60 << 20)]
    assert owner["past_own"][0] == "QuotaExceededError" and "job" in owner["past_own"][1]
    assert f"max_store_bytes={100 << 20}" in owner["past_own"][1]


def test_pending_tasks_stop_submission_in_the_job_and_at_the_agent(cluster):
    c = cluster
    few = _token(c, "--namespace", "pendq", "--max-pending-tasks", "4")
    seen = driver(c, "pendq", """
    import time
    from manta._private.protocol import messages as m
    from manta._private.runtime import context

    @manta.remote
    def nap(s):
        time.sleep(s)
        return s

    refs = [nap.remote(1.0) for _ in range(4)]
    attempt("fifth", lambda: nap.remote(0))
    attempt("first_four", lambda: manta.get(refs, timeout=60))
    attempt("again", lambda: manta.get([nap.remote(0) for _ in range(4)], timeout=60))
    # A job that skips its own check, sending lease requests by hand: the agent
    # holds it to its quota of requests waiting there (these ask for more CPUs
    # than the node has, so they wait).
    rt = context.current()
    def flood():
        import threading
        answers = []
        def ask():
            try:
                answers.append(repr(rt.call_agent(m.RequestLease(job_id=rt.job_id, resources={"CPU": 64.0},
                                                                 env_vars={}))))
            except Exception as e:
                answers.append(type(e).__name__)
        threads = [threading.Thread(target=ask, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        return sorted(answers)
    attempt("flood", flood)
    """, token=few)
    assert seen["fifth"][0] == "QuotaExceededError", seen["fifth"]
    assert "max_pending_tasks=4" in seen["fifth"][1]
    assert seen["first_four"] == ["ok", "[1.0, 1.0, 1.0, 1.0]"]
    assert seen["again"][0] == "ok"
    flood = eval(seen["flood"][1])
    assert flood == ["QuotaExceededError"] * 4, flood
    # Everyone else is served meanwhile and after.
    owner = driver(c, "pendq", """
    attempt("square", lambda: manta.get(manta.remote(lambda x: x * x).remote(9), timeout=60))
    """)
    assert owner["square"] == ["ok", "81"]
