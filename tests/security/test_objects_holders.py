"""Only a holder reads an object: attacks by another job on job A's objects.

Object ids are no secret (a per-process prefix and a counter, listed by the
state API), so job B's task forges refs to job A's objects from their ids
and owner's address, the way an attacker who read them would, and asks
A's driver for them, registers itself as a borrower, and ends the borrow
that keeps one of them alive. Each is refused with AuthorizationError, and
A's objects stay readable. A ref that A hands to B's named actor, as Ray
programs do across jobs, is readable by B (runtime/holders.py).
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
from tests_support import BACKEND, manta_cli  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="objs")
    env = {**os.environ, "MANTA_TMPDIR": root,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    try:
        manta_cli(env, "start", "--head", "--port", "0", "--num-cpus", "2")
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def driver(env, body, **kw):
    script = "import json, os, sys\nimport manta\nmanta.init(address='auto', namespace='shared')\n" + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out


# Job A: a small object (answered inline), a large one (in the store), and one
# kept alive only by the borrow of A's own actor.
JOB_A = """
    import numpy as np
    from manta._private.runtime import context

    @manta.remote
    class Keeper:
        def keep(self, refs):
            self.refs = refs
            return context._runtime.address

        def read(self):
            return manta.get(self.refs[0])

    small = manta.put(b"secret of a")
    large = manta.put(np.full(1 << 20, 7, dtype=np.uint8))
    kept = manta.put(b"kept by a borrow")
    keeper = Keeper.remote()
    keeper_address = manta.get(keeper.keep.remote([kept]))
    kept_id = kept.binary().hex()
    del kept  # now only the keeper's borrow keeps it
    print(json.dumps({"owner": context._runtime.address, "small": small.binary().hex(),
                      "large": large.binary().hex(), "kept": kept_id, "borrower": keeper_address}), flush=True)
    sys.stdin.readline()  # job B attacks now
    got = [manta.get(small).decode(), int(manta.get(large).sum()), manta.get(keeper.read.remote()).decode()]
    print(json.dumps(got), flush=True)
    sys.stdin.readline()
    manta.shutdown()
"""

# Job B's task: forges refs from the ids and tries to read them, to borrow
# them, and to end the borrow that keeps A's object alive.
JOB_B = """
    a = json.loads(sys.argv[1])

    @manta.remote
    def attack(a):
        import time
        from manta._private.protocol import messages as m
        from manta._private.runtime import context
        rt = context._runtime
        out = {}
        for name in ("small", "large", "kept"):
            ref = rt.deserialized_ref(bytes.fromhex(a[name]), a["owner"])
            try:
                manta.get(ref, timeout=60)
                out[name] = "read"
            except Exception as e:
                out[name] = type(e).__name__
        conn = rt.run(rt.peers.peer(a["owner"]))
        oid = bytes.fromhex(a["kept"])

        async def ask(msg):
            return await conn.request(msg)

        for msg in (m.AddBorrow(object_ids=[oid], borrower=rt.address),
                    m.AddBorrow(object_ids=[oid], borrower=rt.address, caps=[b"x" * 16])):
            try:
                rt.run(ask(msg))
                out.setdefault("borrow", []).append("accepted")
            except Exception as e:
                out.setdefault("borrow", []).append(getattr(getattr(e, "kind", None), "name", repr(e)))
        conn.send_threadsafe(m.RemoveBorrow(object_ids=[oid], borrower=a["borrower"]))
        time.sleep(1)  # the owner would free it now, if it took the message
        return out

    print(json.dumps(manta.get(attack.remote(a))))
    manta.shutdown()
"""


def test_another_jobs_task_cannot_read_borrow_or_free_a_jobs_objects(cluster):
    a = driver(cluster, JOB_A, stdin=subprocess.PIPE)
    try:
        ids = json.loads(a.stdout.readline())
        b = subprocess.Popen(
            [sys.executable, "-c", "import json, os, sys\nimport manta\nmanta.init(address='auto')\n"
             + textwrap.dedent(JOB_B), json.dumps(ids)],
            env=cluster, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = json.loads(finish(b))
        assert seen["small"] == seen["large"] == seen["kept"] == "AuthorizationError", seen
        assert seen["borrow"] == ["AUTHORIZATION", "AUTHORIZATION"], seen
        a.stdin.write("\n")
        a.stdin.flush()
        # A's objects, the borrowed one included, are all still there.
        line = a.stdout.readline()
        assert line, a.communicate(timeout=60)[1]
        assert json.loads(line) == ["secret of a", 7 << 20, "kept by a borrow"]
    finally:
        if a.poll() is None:
            a.stdin.write("\n")
            a.stdin.flush()
    finish(a)


def test_a_ref_handed_to_another_jobs_actor_is_readable_there(cluster):
    """As in Ray: job B's named actor reads what job A passes it, whether as an
    argument, nested in one, or nested in an object A put, and passes it on."""
    b = driver(cluster, """
        @manta.remote
        class Helper:
            def read(self, refs):
                return manta.get(refs[0])

        @manta.remote
        class Store:
            def __init__(self, helper):
                self.helper = helper

            def read_arg(self, value):
                return value

            def read_nested(self, refs):
                self.refs = refs
                return manta.get(refs[0])

            def read_kept(self):
                return manta.get(self.refs[0])

            def forward(self, refs):
                return manta.get(self.helper.read.remote(refs))

        store = Store.options(name="store", lifetime="detached").remote(Helper.remote())
        manta.get(store.read_arg.remote(1))
        print("ready", flush=True)
        sys.stdin.readline()
        manta.kill(store)
        manta.shutdown()
    """, stdin=subprocess.PIPE)
    try:
        assert b.stdout.readline().strip() == "ready"
        out = finish(driver(cluster, """
            import numpy as np
            store = manta.get_actor("store")
            small = manta.put("handed to b")
            large = manta.put(np.full(1 << 20, 3, dtype=np.uint8))
            outer = manta.put([small])
            got = [
                manta.get(store.read_arg.remote(small)),
                int(manta.get(store.read_arg.remote(large)).sum()),
                manta.get(store.read_nested.remote([small])),
                int(manta.get(store.read_nested.remote([large])).sum()),
                manta.get(store.read_nested.remote(manta.get(outer))),
                manta.get(store.forward.remote([small])),
            ]
            del small
            got.append(manta.get(store.read_kept.remote()))
            print(json.dumps(got))
            manta.shutdown()
        """))
        assert json.loads(out) == ["handed to b", 3 << 20, "handed to b", 3 << 20, "handed to b",
                                   "handed to b", "handed to b"]
    finally:
        if b.poll() is None:
            b.stdin.write("\n")
            b.stdin.flush()
    finish(b)
