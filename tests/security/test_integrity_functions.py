"""Function poisoning: storing a poisoned blob under another job's function id.

Functions are stored with the head once and loaded by id in every worker.
The victim's function lives in a module both drivers import, so it is
pickled by reference and its id is the same in every job: an attacker can
work it out before the victim runs, and store its own code under it first
(the head used to keep the first blob stored under an id). The head now
stores a blob only under its own content hash, refuses anything else with
a clear error, and audits the refusal; a worker checks the hash again on
load (`tests/unit/test_serialization.py` has that side).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from integrity_support import cluster as start_cluster  # noqa: E402
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI"),
    pytest.mark.timeout(180),
]

VICTIM_MODULE = """
def double(x):
    return x * 2
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    modules = str(tmp_path_factory.mktemp("modules"))
    with open(os.path.join(modules, "victim_mod.py"), "w") as f:
        f.write(VICTIM_MODULE)
    with start_cluster("fnp", "--num-cpus", "2", pythonpath=(modules,)) as c:
        yield c


def test_a_poisoned_blob_under_another_functions_id_is_refused_and_the_victim_runs_its_own_code(cluster):
    attacker = cluster.result("""
        from manta._private import ids, session
        from manta._private.protocol import messages as m
        from manta._private.runtime.serialization import dumps_function
        import victim_mod

        # The id the victim's function will have, worked out without storing it.
        victim_id = ids.function_id(dumps_function(victim_mod.double))
        poison = dumps_function(lambda x: "POISONED")
        out = {}
        for name, fn_id in (("victims_id", victim_id), ("made_up_id", b"\\x00" * 32)):
            try:
                session.current().rt.call_head(m.PutFunction(fn_id=fn_id, blob=poison))
                out[name] = ["stored", ""]
            except Exception as e:
                out[name] = [type(e).__name__, str(e)]
        out["victim_id"] = victim_id.hex()
        manta.shutdown()
        print(json.dumps(out))
    """)
    for name in ("victims_id", "made_up_id"):
        kind, text = attacker[name]
        assert kind == "AuthorizationError", attacker
        assert "is not the hash of" in text, text

    victim = cluster.result("""
        import victim_mod
        double = manta.remote(victim_mod.double)
        print(json.dumps(manta.get([double.remote(i) for i in range(4)])))
        manta.shutdown()
    """)
    assert victim == [0, 2, 4, 6]

    records = cluster.audit_records()
    refused = [r for r in records if r["action"] == "function.put" and r["outcome"] == "refused"]
    assert attacker["victim_id"] in {r["target"] for r in refused}, refused
    assert all("is not the hash of" in r["detail"] for r in refused)
    # The victim's own store was allowed and recorded.
    assert any(r["action"] == "function.put" and r["outcome"] == "ok" and r["target"] == attacker["victim_id"]
               for r in records)
