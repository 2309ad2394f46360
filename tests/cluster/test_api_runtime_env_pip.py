"""runtime_env `pip`, `py_modules` and `config`, as in Ray.

`pip` builds a real virtual environment from the package registry (PyPI,
which CI reaches), once per distinct environment on each node; tasks and
actors that name it run there, their children inherit it, and others never
see its packages. A build that fails raises RuntimeEnvSetupError with pip's
own message. `py_modules` ships local directories, files and wheels.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import os
import zipfile

import pytest

pytestmark = pytest.mark.timeout(300)

# Small, pure-Python and not installed where the suite runs.
PACKAGE = "pyjokes==0.6.0"
MISSING = "manta-test-no-such-package-zz==9.9.9"


@pytest.fixture(scope="module")
def not_installed():
    try:
        import pyjokes  # noqa: F401
    except ImportError:
        return
    pytest.skip("pyjokes is installed where the tests run, so the environment would prove nothing")


def test_a_pip_environment_holds_its_packages_for_its_tasks_actors_and_their_children(
        ray_start_2cpu, not_installed, tmp_path):
    ray = ray_start_2cpu

    @ray.remote
    def version_here():
        try:
            import pyjokes
        except ImportError:
            return None
        return pyjokes.__version__

    @ray.remote(runtime_env={"pip": [PACKAGE]})
    def in_env():
        import pyjokes

        # A child inherits its parent's runtime_env.
        return pyjokes.__version__, ray.get(version_here.remote())

    @ray.remote(runtime_env={"pip": [PACKAGE]})
    class InEnv:
        def version(self):
            import pyjokes

            return pyjokes.__version__

    assert ray.get(in_env.remote(), timeout=240) == ("0.6.0", "0.6.0")
    assert ray.get(InEnv.remote().version.remote(), timeout=240) == "0.6.0"
    assert ray.get(version_here.remote(), timeout=60) is None  # the base environment is untouched
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"# what the task needs\n{PACKAGE}\n")
    assert ray.get(version_here.options(runtime_env={"pip": str(reqs)}).remote(), timeout=240) == "0.6.0"
    opts = {"pip": {"packages": [PACKAGE], "pip_check": False}}
    assert ray.get(version_here.options(runtime_env=opts).remote(), timeout=240) == "0.6.0"


def test_a_pip_environment_that_cannot_be_built_fails_its_work_with_pips_message(ray_start_2cpu):
    ray = ray_start_2cpu

    @ray.remote(runtime_env={"pip": [MISSING]})
    def task():
        return 1

    @ray.remote(runtime_env={"pip": [MISSING]})
    class Actor:
        def ping(self):
            return 1

    with pytest.raises(ray.exceptions.RuntimeEnvSetupError) as info:
        ray.get(task.remote(), timeout=240)
    assert "manta-test-no-such-package-zz" in str(info.value)
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError):
        ray.get(Actor.remote().ping.remote(), timeout=240)

    @ray.remote
    def fine():
        return "still serving"

    assert ray.get(fine.remote(), timeout=60) == "still serving"


def test_runtime_env_config_is_checked_as_ray_checks_it(ray_start_2cpu):
    ray = ray_start_2cpu
    from importlib import import_module

    RuntimeEnvConfig = import_module(f"{ray.__name__}.runtime_env").RuntimeEnvConfig

    @ray.remote
    def f():
        return 1

    with pytest.raises(ValueError):
        f.options(runtime_env={"config": {"setup_timeout_seconds": 0}}).remote()
    with pytest.raises(TypeError):
        f.options(runtime_env={"pip": 5}).remote()
    with pytest.raises(ValueError):
        RuntimeEnvConfig(setup_timeout_seconds=0)
    config = RuntimeEnvConfig(setup_timeout_seconds=30)
    assert ray.get(f.options(runtime_env={"env_vars": {"A": "1"}, "config": config}).remote(), timeout=60) == 1


def _wheel(path, name, value, version="0.1", init=None):
    """A minimal pure-Python wheel holding package `name`."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": init or f"VALUE = {value!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return str(whl)


@pytest.fixture
def modules(tmp_path):
    pkg = tmp_path / "src" / "pm_shipped_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .inner import VALUE\n")
    (pkg / "inner.py").write_text("VALUE = 'from a directory'\n")
    return str(pkg), _wheel(tmp_path, "pm_wheel_pkg", "from a wheel")


def _use_and_plain(ray):
    @ray.remote
    def use():
        import pm_shipped_pkg
        import pm_wheel_pkg

        return pm_shipped_pkg.VALUE, pm_wheel_pkg.VALUE, os.path.dirname(pm_shipped_pkg.__file__)

    @ray.remote
    def plain():
        try:
            import pm_shipped_pkg  # noqa: F401
        except ImportError:
            return "absent"
        return "present"

    return use, plain


def test_a_jobs_py_modules_ship_directories_and_wheels(ray_clean, modules):
    ray = ray_clean
    pkg, whl = modules
    ray.init(num_cpus=1, runtime_env={"py_modules": [pkg, whl]})
    try:
        use, _ = _use_and_plain(ray)
        directory, wheel, where = ray.get(use.remote(), timeout=120)
        assert (directory, wheel) == ("from a directory", "from a wheel")
        assert where != pkg  # a copy
    finally:
        ray.shutdown()


def test_a_tasks_own_py_modules(ray_start_2cpu, modules, backend_name):
    if backend_name == "ray":
        pytest.skip("beyond Ray: Ray uploads local py_modules only at the job level")
    ray = ray_start_2cpu
    pkg, whl = modules
    use, plain = _use_and_plain(ray)
    env = {"py_modules": [pkg, whl]}
    assert ray.get(use.options(runtime_env=env).remote(), timeout=120)[:2] == ("from a directory", "from a wheel")
    assert ray.get(plain.remote(), timeout=60) == "absent"


def test_setup_timeout_seconds_bounds_building_the_environment(ray_start_2cpu):
    ray = ray_start_2cpu
    import socket

    # A package index that takes connections and never answers: pip waits
    # far longer than the environment may take.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        env = {"pip": {"packages": [MISSING], "pip_install_options": ["--index-url", index, "--timeout", "60"]},
               "config": {"setup_timeout_seconds": 3}}

        @ray.remote(runtime_env=env)
        def task():
            return 1

        with pytest.raises(ray.exceptions.RuntimeEnvSetupError):
            ray.get(task.remote(), timeout=120)
    finally:
        silent.close()


def test_an_environment_where_the_worker_cannot_start_fails_fast(ray_start_2cpu, tmp_path, backend_name):
    if backend_name == "ray":
        pytest.skip("shadows a package manta's worker imports (msgspec), which Ray does not use")
    ray = ray_start_2cpu
    # A msgspec that fails at import, as a clashing release might.
    broken = _wheel(tmp_path, "msgspec", None, "99.0", init="raise ImportError('broken on purpose')\n")

    @ray.remote(runtime_env={"pip": [broken]})
    def task():
        return 1

    with pytest.raises(ray.exceptions.RuntimeEnvSetupError, match="cannot start"):
        ray.get(task.remote(), timeout=120)

    @ray.remote
    def fine():
        return 2

    assert ray.get(fine.remote(), timeout=60) == 2
