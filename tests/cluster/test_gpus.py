"""Logical GPUs: specific device ids per task and actor, as in Ray."""

import importlib
import os

import pytest
from tests_support import BACKEND


@pytest.fixture(scope="module")
def ray():
    mod = importlib.import_module(BACKEND)
    mod.init(num_cpus=4, num_gpus=2)
    try:
        yield mod
    finally:
        mod.shutdown()


def test_tasks_get_distinct_gpu_ids_and_cuda_visible_devices(ray, tmp_path):
    @ray.remote(num_gpus=1)
    def which(me, other):
        import time

        # Both running at once, so both GPUs are in use: each waits for the other.
        open(me, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(other) and time.monotonic() < deadline:
            time.sleep(0.01)
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    results = ray.get([which.remote(a, b), which.remote(b, a)])
    ids = sorted(tuple(r[0]) for r in results)
    assert [tuple(map(int, i)) for i in ids] == [(0,), (1,)]
    for gpu_ids, visible in results:
        assert visible == ",".join(str(i) for i in gpu_ids)


def test_task_without_gpus_sees_none(ray):
    @ray.remote
    def which():
        return ray.get_gpu_ids()

    assert ray.get(which.remote()) == []


def test_fractional_gpu_actors_share_one_device(ray):
    @ray.remote(num_gpus=0.5)
    class Half:
        def ids(self):
            return ray.get_gpu_ids()

    a, b = Half.remote(), Half.remote()
    ia, ib = ray.get([a.ids.remote(), b.ids.remote()])
    assert len(ia) == 1 and ia == ib


def test_gpu_work_gets_workers_of_its_own(ray):
    @ray.remote(num_gpus=1)
    def gpu():
        return os.getpid()

    @ray.remote
    def cpu():
        return os.getpid()

    cpu_pids = set(ray.get([cpu.remote() for _ in range(4)]))
    gpu_pids = set(ray.get([gpu.remote() for _ in range(4)]))
    assert not cpu_pids & gpu_pids
