"""Fixtures for the cluster-level API suite.

The same test files run against manta and against real Ray, so that every
test is checked against the behaviour manta has to reproduce:

    MANTA_TEST_BACKEND=manta  (default)  -> ``import manta``
    MANTA_TEST_BACKEND=ray                -> ``import ray``

Tests never import the backend themselves; they take the ``ray`` fixture (the
imported backend module) and define their remote functions and actor classes
inside the test body or inside fixtures.  That way the code is shipped to the
workers by value and the worker never has to import a test module.

Cluster fixtures
----------------
``ray_start``       init(num_cpus=4, resources={"custom": 2}, namespace="test")
``ray_start_2cpu``  init(num_cpus=2)
``ray_clean``       no cluster running; the test calls init/shutdown itself.

Starting a cluster takes seconds, so a cluster started by ``ray_start`` or
``ray_start_2cpu`` is kept for the following tests that ask for the same
configuration and shut down when another configuration is asked for, when a
test asks for ``ray_clean``, or at the end of the module.  Tests are grouped by
fixture inside each module to keep the number of restarts small.
"""

import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

BACKEND = (os.environ.get("MANTA_TEST_BACKEND") or "manta").strip()

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

DEFAULT_TIMEOUT = 60

# The repository root has to be importable by the driver and by every worker
# process (manta may be used from a checkout without being installed).
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
_pp = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if REPO_ROOT not in _pp:
    os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + _pp)

START_ARGS = dict(num_cpus=4, resources={"custom": 2}, namespace="test")
START_2CPU_ARGS = dict(num_cpus=2)


# --------------------------------------------------------------------------
# time limits
# --------------------------------------------------------------------------


def _have_timeout_plugin(config):
    return config.pluginmanager.hasplugin("timeout")


def pytest_configure(config):
    if not _have_timeout_plugin(config):
        config.addinivalue_line(
            "markers",
            "timeout(seconds): time limit of one test (pytest-timeout, or the "
            "SIGALRM fallback in tests/cluster/conftest.py)",
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


class _TestTimedOut(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Without pytest-timeout, bound each test with SIGALRM ourselves."""
    use_alarm = (
        not _have_timeout_plugin(item.config)
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not use_alarm:
        yield
        return
    marker = item.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker and marker.args else DEFAULT_TIMEOUT

    def _on_alarm(signum, frame):
        raise _TestTimedOut(f"test exceeded its {seconds:.0f} s time limit")

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------
# backend module
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def backend_name():
    return BACKEND


@pytest.fixture(scope="session")
def ray():
    """The backend module (``manta`` or ``ray``), with ``.exceptions`` loaded."""
    module = importlib.import_module(BACKEND)
    importlib.import_module(BACKEND + ".exceptions")
    return module


# --------------------------------------------------------------------------
# clusters
# --------------------------------------------------------------------------


class _Cluster:
    """Remembers which configuration the running cluster was started with."""

    key = None

    @classmethod
    def stop(cls, module):
        cls.key = None
        if module.is_initialized():
            module.shutdown()

    @classmethod
    def ensure(cls, module, kwargs):
        key = repr(sorted(kwargs.items()))
        if cls.key == key and module.is_initialized():
            return
        cls.stop(module)
        module.init(**kwargs)
        cls.key = key


@pytest.fixture(scope="module")
def _module_cluster(ray):
    yield
    _Cluster.stop(ray)


@pytest.fixture
def ray_start(ray, _module_cluster):
    """init(num_cpus=4, resources={"custom": 2}, namespace="test")."""
    _Cluster.ensure(ray, START_ARGS)
    yield ray


@pytest.fixture
def ray_start_2cpu(ray, _module_cluster):
    """init(num_cpus=2)."""
    _Cluster.ensure(ray, START_2CPU_ARGS)
    yield ray


@pytest.fixture
def ray_clean(ray, _module_cluster):
    """No cluster is running; the test calls init()/shutdown() itself."""
    _Cluster.stop(ray)
    yield ray
    _Cluster.stop(ray)


# --------------------------------------------------------------------------
# helpers.  They are returned by fixtures as nested functions so that remote
# code that closes over them is shipped to workers by value.
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(predicate, timeout=30, interval=0.05, message=...) -> value.

    Polls until predicate() returns something truthy; fails the test when the
    deadline passes.  Exceptions raised by the predicate are retried.
    """

    def _wait_for(predicate, timeout=30.0, interval=0.05, message="condition"):
        deadline = time.monotonic() + timeout
        last_exc = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - retried until deadline
                last_exc = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last_exc!r})" if last_exc else ""
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {message}{detail}")
            time.sleep(interval)

    return _wait_for


@pytest.fixture(scope="session")
def gate_helpers():
    """(block_until, touch): file-based gates usable inside remote code.

    ``block_until(path, timeout=30)`` polls until the file exists and raises
    TimeoutError after the deadline; ``touch(path)`` creates it.
    """

    def block_until(path, timeout=30.0):
        import os as _os
        import time as _time

        deadline = _time.monotonic() + timeout
        while not _os.path.exists(path):
            if _time.monotonic() > deadline:
                raise TimeoutError(f"gate {path} was never opened")
            _time.sleep(0.02)

    def touch(path):
        with open(path, "a"):
            pass

    return block_until, touch


@pytest.fixture(scope="session")
def concurrency_recorder_cls(ray):
    """An actor class (num_cpus=0) that counts how many callers are inside.

    enter() -> number currently inside (after entering); leave(); peak().
    """

    class ConcurrencyRecorder:
        def __init__(self):
            self.inside = 0
            self.max_inside = 0
            self.total = 0

        def enter(self):
            self.inside += 1
            self.total += 1
            self.max_inside = max(self.max_inside, self.inside)
            return self.inside

        def leave(self):
            self.inside -= 1

        def peak(self):
            return self.max_inside

        def entered(self):
            return self.total

    return ray.remote(num_cpus=0)(ConcurrencyRecorder)


@pytest.fixture
def run_driver(backend_name):
    """Run a driver script in a subprocess of this interpreter.

    run_driver(source) -> DriverProcess.  ``{backend}`` in the source is
    replaced by the backend module name.  The process gets PYTHONPATH with the
    repository root and MANTA_TEST_BACKEND set.  Its stdout/stderr are read by
    background threads; see DriverProcess for polling helpers.
    """
    procs = []

    def _run(source):
        source = source.replace("{backend}", backend_name)
        env = dict(os.environ)
        env["MANTA_TEST_BACKEND"] = backend_name
        env["PYTHONUNBUFFERED"] = "1"
        proc = DriverProcess(source, env)
        procs.append(proc)
        return proc

    yield _run
    for proc in procs:
        proc.close()


class DriverProcess:
    def __init__(self, source, env):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            text=True,
            errors="replace",
        )
        self.stdout_lines = []
        self.stderr_lines = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink):
        for line in stream:
            with self._lock:
                sink.append(line)

    def stdout(self):
        with self._lock:
            return "".join(self.stdout_lines)

    def stderr(self):
        with self._lock:
            return "".join(self.stderr_lines)

    def send(self, text):
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            for t in self._threads:
                t.join(timeout=5)
        return rc

    def close(self):
        if self.proc.poll() is None:
            # Only ever the process this fixture started.
            self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
