"""joblib and dask on the cluster: `util.joblib.register_ray()` (joblib's
"ray" backend) and `util.dask` (a dask scheduler running each graph task as
a task).

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
The tests skip where joblib or dask is not installed.
"""

import importlib
import operator
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(90)


def _sub(ray, name):
    return importlib.import_module(f"{ray.__name__}.{name}")


@pytest.fixture
def rendezvous(tmp_path):
    """meet(n), for remote code: notes this process and waits (30 s at most)
    until n distinct processes did; returns the pid. Work that meets n
    others ran in n processes at the same time."""
    folder = str(tmp_path / "pids")
    os.makedirs(folder)

    def meet(n):
        import os as _os
        import time as _time

        pid = _os.getpid()
        open(_os.path.join(folder, str(pid)), "a").close()
        deadline = _time.monotonic() + 30
        while len(_os.listdir(folder)) < n:
            if _time.monotonic() > deadline:
                raise TimeoutError(f"only {len(_os.listdir(folder))} of {n} processes came")
            _time.sleep(0.01)
        return pid

    return meet


@pytest.fixture
def joblib_ray(ray_start):
    """joblib, with the "ray" backend registered."""
    joblib = pytest.importorskip("joblib")
    _sub(ray_start, "util.joblib").register_ray()
    return joblib


@pytest.fixture
def dask_ray(ray_start):
    """(dask, the backend's util.dask)."""
    dask = pytest.importorskip("dask")
    return dask, _sub(ray_start, "util.dask")


# --------------------------------------------------------------------------
# joblib
# --------------------------------------------------------------------------


def test_joblib_runs_batches_as_tasks_in_worker_processes_n_jobs_at_a_time(
    ray_start, joblib_ray, rendezvous, concurrency_recorder_cls
):
    ray = ray_start
    joblib = joblib_ray
    recorder = concurrency_recorder_cls.remote()

    def square(i):
        ray.get(recorder.enter.remote())
        try:
            return i * i, rendezvous(2)
        finally:
            ray.get(recorder.leave.remote())

    with joblib.parallel_backend("ray"):
        out = joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(24))
    assert [v for v, _ in out] == [i * i for i in range(24)]
    pids = {pid for _, pid in out}
    assert len(pids) >= 2 and os.getpid() not in pids
    # Two at once (they met), never more than n_jobs on a 4-CPU cluster.
    assert ray.get(recorder.peak.remote()) == 2


def test_joblib_n_jobs_minus_one_counts_the_clusters_cpus_and_one_job_runs_in_the_caller(ray_start, joblib_ray):
    ray = ray_start
    joblib = joblib_ray
    with joblib.parallel_backend("ray"):
        assert joblib.effective_n_jobs(-1) == int(ray.cluster_resources()["CPU"]) == 4
        out = joblib.Parallel(n_jobs=1)(joblib.delayed(os.getpid)() for _ in range(3))
    assert out == [os.getpid()] * 3


def test_joblib_error_raises_the_functions_exception(ray_start, joblib_ray):
    joblib = joblib_ray

    def check(i):
        if i == 7:
            raise ValueError(f"bad item {i}")
        return i

    with joblib.parallel_config(backend="ray", n_jobs=2):
        with pytest.raises(ValueError, match="bad item 7"):
            joblib.Parallel()(joblib.delayed(check)(i) for i in range(20))
        # The backend is usable again after the failure.
        assert joblib.Parallel()(joblib.delayed(check)(i) for i in range(5)) == list(range(5))


def test_joblib_ray_remote_args_are_the_tasks_options(ray_start, joblib_ray):
    ray = ray_start
    joblib = joblib_ray

    def cpus(_):
        return ray.get_runtime_context().get_assigned_resources().get("CPU")

    with joblib.parallel_backend("ray", ray_remote_args=dict(num_cpus=2)):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(cpus)(i) for i in range(4)) == [2.0] * 4
    with joblib.parallel_backend("ray"):
        out = joblib.Parallel(n_jobs=2, ray_remote_args=dict(num_cpus=0.5))(joblib.delayed(cpus)(i) for i in range(4))
    assert out == [0.5] * 4


def test_joblib_results_as_a_generator(ray_start, joblib_ray, backend_name):
    if backend_name == "ray":
        pytest.skip("beyond Ray: Ray 2.60's backend refuses return_as='generator'")
    joblib = joblib_ray
    with joblib.parallel_backend("ray"):
        gen = joblib.Parallel(n_jobs=2, return_as="generator")(joblib.delayed(operator.neg)(i) for i in range(10))
        assert list(gen) == [-i for i in range(10)]
        unordered = joblib.Parallel(n_jobs=2, return_as="generator_unordered")(
            joblib.delayed(operator.neg)(i) for i in range(10)
        )
        assert sorted(unordered) == sorted(-i for i in range(10))


# --------------------------------------------------------------------------
# dask
# --------------------------------------------------------------------------


def test_dask_delayed_tree_runs_each_task_in_worker_processes(ray_start, dask_ray, rendezvous):
    dask, rdask = dask_ray

    def leaf(i):
        return i, rendezvous(2)

    def combine(a, b):
        return a[0] + b[0], a[1] | b[1]

    def as_set(x):
        return x[0], {x[1]}

    level = [dask.delayed(as_set)(dask.delayed(leaf)(i)) for i in range(16)]
    while len(level) > 1:
        level = [dask.delayed(combine)(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    total, pids = dask.compute(level[0], scheduler=rdask.ray_dask_get)[0]
    assert total == sum(range(16))
    assert len(pids) >= 2 and os.getpid() not in pids


def test_dask_array_gives_what_dasks_own_scheduler_gives(ray_start, dask_ray):
    dask, rdask = dask_ray
    np = pytest.importorskip("numpy")
    da = pytest.importorskip("dask.array")
    x = da.arange(400, chunks=50).reshape(20, 20).rechunk(5) / 7.0
    exprs = [(x + x.T).sum(), x.dot(x.T).mean(axis=0), (x[::2, 1:] ** 2).std(), x.T.cumsum(axis=1)]
    ours = dask.compute(*exprs, scheduler=rdask.ray_dask_get)
    theirs = dask.compute(*exprs, scheduler="sync")
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b)
    base = np.arange(400).reshape(20, 20) / 7.0
    np.testing.assert_allclose(ours[0], (base + base.T).sum())


def test_dask_dataframe_with_dask_on_ray_enabled(ray_start, dask_ray):
    dask, rdask = dask_ray
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"a": [i % 7 for i in range(200)], "b": range(200), "c": [float(i) / 3 for i in range(200)]})
    df = dd.from_pandas(pdf, npartitions=5)
    with rdask.enable_dask_on_ray():
        assert dask.config.get("scheduler") is rdask.ray_dask_get
        grouped = df.groupby("a").c.sum().compute()
        shuffled = df.shuffle("a").b.sum().compute()
        merged = df.merge(df[["a", "b"]].rename(columns={"b": "b2"}).drop_duplicates("a"), on="a").b2.sum().compute()
        by_index = df.set_index("b").loc[10:20].c.compute()
    pd.testing.assert_series_equal(grouped.sort_index(), pdf.groupby("a").c.sum())
    assert shuffled == pdf.b.sum()
    assert merged == pdf.merge(pdf[["a", "b"]].rename(columns={"b": "b2"}).drop_duplicates("a"), on="a").b2.sum()
    pd.testing.assert_series_equal(by_index, pdf.set_index("b").loc[10:20].c)
    assert dask.config.get("scheduler", None) is not rdask.ray_dask_get


def test_dask_enable_and_disable_set_dasks_config(ray_start, dask_ray):
    dask, rdask = dask_ray
    try:
        rdask.enable_dask_on_ray()
        assert dask.config.get("scheduler") is rdask.ray_dask_get
        assert dask.delayed(operator.add)(1, 2).compute() == 3
    finally:
        rdask.disable_dask_on_ray()
    assert dask.config.get("scheduler", None) is None


def test_dask_task_error_raises_its_type(ray_start, dask_ray):
    dask, rdask = dask_ray

    def divide(a, b):
        return a / b

    bad = dask.delayed(divide)(1, 0)
    downstream = dask.delayed(operator.add)(bad, 1)
    with pytest.raises(ZeroDivisionError):
        dask.compute(downstream, scheduler=rdask.ray_dask_get)


def test_dask_raw_graph_of_tuple_tasks_aliases_and_nested_keys(ray_start, dask_ray):
    _, rdask = dask_ray
    get = rdask.ray_dask_get
    graph = {
        "x": 1,
        "y": (operator.add, "x", 10),
        "z": "y",
        "w": (sum, ["x", "y", (operator.mul, "y", 2)]),
        ("chunk", 0): (operator.neg, "w"),
    }
    assert get(graph, "w") == 1 + 11 + 22
    assert list(get(graph, ["z", "y"])) == [11, 11]
    nested = get(graph, [["z"], ("chunk", 0)])
    assert list(nested[0]) == [11] and nested[1] == -34


def test_dask_persist_keeps_results_in_the_object_store(ray_start, dask_ray):
    ray = ray_start
    dask, rdask = dask_ray
    refs = rdask.ray_dask_get({"x": 2, "y": (operator.mul, "x", 21)}, ["y"], ray_persist=True)
    assert isinstance(refs[0], ray.ObjectRef) and ray.get(refs[0]) == 42

    value = dask.delayed(operator.mul)(dask.delayed(operator.add)(1, 2), 5)
    (persisted,) = rdask.ray_dask_persist(value, scheduler=rdask.ray_dask_get)
    chunks = list(dict(persisted.__dask_graph__()).values())
    assert len(chunks) == 1 and isinstance(chunks[0], ray.ObjectRef)
    assert dask.compute(persisted + 1, scheduler=rdask.ray_dask_get)[0] == 16


def test_dask_ray_remote_args_from_compute_and_annotations(ray_start, dask_ray):
    ray = ray_start
    dask, rdask = dask_ray

    def assigned(*_):
        return ray.get_runtime_context().get_assigned_resources()

    plain = dask.delayed(assigned)()
    with dask.annotate(ray_remote_args=dict(num_cpus=2)):
        annotated = dask.delayed(assigned)(plain)
    got_plain, got_annotated = dask.compute(
        plain, annotated, scheduler=rdask.ray_dask_get, ray_remote_args=dict(resources={"custom": 1})
    )
    assert got_plain == {"CPU": 1.0, "custom": 1.0}
    assert got_annotated["CPU"] == 2.0


def test_dask_get_sync_runs_one_task_at_a_time_and_stops_at_a_failure(
    ray_start, dask_ray, concurrency_recorder_cls, backend_name, tmp_path
):
    if backend_name == "ray":
        pytest.skip("beyond Ray: Ray 2.60's ray_dask_get_sync fails on any graph (a missing argument)")
    ray = ray_start
    dask, rdask = dask_ray
    recorder = concurrency_recorder_cls.remote()
    marker = str(tmp_path / "ran-after-the-failure")

    def step(i, *_):
        ray.get(recorder.enter.remote())
        ray.get(recorder.leave.remote())
        return i

    parts = [dask.delayed(step)(i) for i in range(8)]
    total = dask.delayed(sum)(parts)
    assert dask.compute(total, scheduler=rdask.ray_dask_get_sync)[0] == sum(range(8))
    assert ray.get(recorder.peak.remote()) == 1

    def fail():
        raise KeyError("first")

    def later():
        open(marker, "w").close()

    # The keys' tasks run in the order asked for: "b" never starts.
    with pytest.raises(KeyError):
        rdask.ray_dask_get_sync({"a": (fail,), "b": (later,)}, ["a", "b"])
    assert not os.path.exists(marker)


# --------------------------------------------------------------------------
# without the libraries
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing, code",
    [
        ("joblib", "from {backend}.util.joblib import register_ray; register_ray()"),
        ("dask", "from {backend}.util.dask import ray_dask_get"),
    ],
)
def test_a_missing_library_raises_an_import_error_naming_it(ray, backend_name, missing, code):
    # A fresh interpreter in which the library cannot be imported.
    script = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "try:\n"
        f"    {code.format(backend=backend_name)}\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ImportError:") and missing in out.stdout, out.stdout + out.stderr
