"""The head never unpickles anything a worker sent.

An actor's constructor raises an exception holding an object whose
`__reduce__` runs code when it is unpickled (it writes the pid and command line of whoever
unpickles it to a file): the worker pickles it into the creation task's
reply to the head. The head must report the failure from the plain-text
summary the worker sent with it, and run nothing. The same holds for the
node agent: neither process even imports a pickle module, which the second
test checks, statically (every import in their packages, including those
inside functions) and in a fresh interpreter.
"""

import ast
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from integrity_support import REPO_ROOT  # noqa: E402
from integrity_support import cluster as start_cluster  # noqa: E402
from tests_support import BACKEND  # noqa: E402

# Modules that turn bytes into code or objects of any class.
UNPICKLERS = {"pickle", "_pickle", "cloudpickle", "dill", "shelve", "jsonpickle"}
# What runs in the head and the node agents (the fork server's children are workers).
PEER_FACING = ("head", "node", "control", "transport", "auth", "scheduling", "objectstore", "protocol")


@pytest.mark.skipif(BACKEND != "manta", reason="starts a manta cluster with manta's CLI")
@pytest.mark.timeout(180)
def test_a_pickle_bomb_sent_as_an_actor_creation_error_runs_no_code_in_the_head(tmp_path):
    trace = tmp_path / "unpickled-by.txt"
    with start_cluster("pkb", "--num-cpus", "2") as c:
        out = c.result(f"""
            from manta import exceptions

            def record_unpickling(path):
                with open(path, "a") as f:
                    f.write(str(os.getpid()) + " " + open("/proc/self/cmdline").read().replace("\\0", " ") + "\\n")
                return RuntimeError("the bomb went off")

            class Trigger:
                def __reduce__(self):
                    return record_unpickling, ({str(trace)!r},)

            class Bomb(Exception):
                def __init__(self):
                    super().__init__()
                    self.payload = Trigger()  # travels in the error's state, and goes off when unpickled

                def __str__(self):
                    return "a harmless-looking summary"

            @manta.remote
            class Victimless:
                def __init__(self):
                    raise Bomb()

                def ping(self):
                    return "pong"

            a = Victimless.remote()
            try:
                manta.get(a.ping.remote(), timeout=60)
                got = ["no error", ""]
            except Exception as e:
                got = [type(e).__name__, str(e)]
            # The cluster goes on serving.
            got.append(manta.get(manta.remote(lambda: "served").remote()))
            manta.shutdown()
            print(json.dumps(got))
        """)
        kind, text, served = out
        assert kind == "ActorDiedError", out
        assert "a harmless-looking summary" in text and "creation task" in text
        assert served == "served"
        unpicklers = trace.read_text().splitlines() if trace.exists() else []
        for line in unpicklers:
            assert "head.main" not in line and "node.main" not in line, unpicklers


def _imports(path: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("__import__")
    return names


def test_the_head_and_the_agents_import_no_unpickler():
    private = os.path.join(REPO_ROOT, "manta", "_private")
    found = []
    for package in PEER_FACING:
        for dirpath, _, files in os.walk(os.path.join(private, package)):
            for f in files:
                if f.endswith(".py") and f != "zygote.py":  # the fork server's children are workers
                    path = os.path.join(dirpath, f)
                    bad = _imports(path) & (UNPICKLERS | {"__import__", "importlib"})
                    if bad:
                        found.append((os.path.relpath(path, REPO_ROOT), sorted(bad)))
    assert found == []
    check = (
        "import sys, manta._private.head.main, manta._private.node.main\n"
        f"print(sorted(set(sys.modules) & set({sorted(UNPICKLERS)!r})))"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
