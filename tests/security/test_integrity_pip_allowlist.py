"""runtime_env pip sources restricted to the admin's allowlist.

The cluster is started with `--pip-allow-index` naming a package index the
test serves on loopback (holding one small wheel) and `--pip-allow-package`
naming that wheel's project. A job asks for a package not on the list,
adds an index of its own, and names the allowed package by URL: each is
refused with a RuntimeEnvSetupError that names what was not allowed, for a
task and for an actor, and nothing is installed. The allowed package
installs from the allowed index (the only one pip is given: it never falls
back to PyPI), and the cluster goes on serving.
"""

import http.server
import os
import sys
import threading
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from integrity_support import cluster as start_cluster  # noqa: E402
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own allowlist"),
    pytest.mark.timeout(300),
]

WHEEL_PROJECT = "allowed-pkg"


def _wheel(directory, name, version="0.1"):
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 'from the allowed index'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    whl = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, whl), "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return whl


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A PEP 503 simple index on loopback holding one wheel."""
    root = tmp_path_factory.mktemp("index")
    project = root / "simple" / WHEEL_PROJECT
    project.mkdir(parents=True)
    whl = _wheel(str(project), "allowed_pkg")
    (project / "index.html").write_text(f'<html><body><a href="{whl}">{whl}</a></body></html>\n')
    (root / "simple" / "index.html").write_text(f'<a href="{WHEEL_PROJECT}/">{WHEEL_PROJECT}</a>\n')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def test_runtime_env_pip_outside_the_allowlist_is_refused_and_inside_it_installs(index):
    with start_cluster("pip", "--num-cpus", "2", "--pip-allow-index", index,
                       "--pip-allow-package", WHEEL_PROJECT) as c:
        out = c.result("""
            from manta import exceptions

            @manta.remote
            def value():
                import allowed_pkg
                return allowed_pkg.VALUE

            @manta.remote
            class Holder:
                def value(self):
                    import allowed_pkg
                    return allowed_pkg.VALUE

            def attempt(env):
                try:
                    return ["ok", manta.get(value.options(runtime_env=env).remote(), timeout=240)]
                except exceptions.RuntimeEnvSetupError as e:
                    return ["RuntimeEnvSetupError", str(e)]
                except Exception as e:
                    return [type(e).__name__, str(e)]

            out = {
                "other_package": attempt({"pip": ["evil-pkg==1.0"]}),
                "other_index": attempt({"pip": {"packages": ["allowed-pkg"],
                                                "pip_install_options": ["--extra-index-url",
                                                                        "https://evil.example/simple"]}}),
                "by_url": attempt({"pip": ["allowed-pkg @ https://evil.example/allowed_pkg-0.1-py3-none-any.whl"]}),
            }
            try:
                manta.get(Holder.options(runtime_env={"pip": ["evil-pkg"]}).remote().value.remote(), timeout=120)
                out["actor"] = ["ok", ""]
            except Exception as e:
                out["actor"] = [type(e).__name__, str(e)]
            out["allowed"] = attempt({"pip": ["Allowed_Pkg==0.1"]})
            out["served"] = manta.get(manta.remote(lambda: "served").remote())
            manta.shutdown()
            print(json.dumps(out))
        """)
    kind, text = out["other_package"]
    assert kind == "RuntimeEnvSetupError" and "the package 'evil-pkg' is not allowed" in text, out
    assert WHEEL_PROJECT in text  # says what is
    kind, text = out["other_index"]
    assert kind == "RuntimeEnvSetupError" and "the pip index 'https://evil.example/simple' is not allowed" in text
    kind, text = out["by_url"]
    assert kind == "RuntimeEnvSetupError" and "is not a package name with a version" in text, out
    kind, text = out["actor"]
    assert kind in ("RuntimeEnvSetupError", "ActorDiedError") and "'evil-pkg' is not allowed" in text, out
    assert out["allowed"] == ["ok", "from the allowed index"], out
    assert out["served"] == "served"
