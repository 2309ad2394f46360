"""The head's key-value store (ray.experimental.internal_kv) and job listing.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import importlib

import pytest

pytestmark = pytest.mark.timeout(60)


def _kv(ray):
    return importlib.import_module(ray.__name__ + ".experimental.internal_kv")


def test_internal_kv_put_get_exists_list_and_delete(ray_start_2cpu):
    kv = _kv(ray_start_2cpu)
    ns = "kvtest"
    assert kv._internal_kv_get(b"missing", namespace=ns) is None
    assert kv._internal_kv_put(b"a/1", b"one", namespace=ns) is False
    assert kv._internal_kv_put(b"a/1", b"uno", overwrite=False, namespace=ns) is True
    assert kv._internal_kv_get(b"a/1", namespace=ns) == b"one"
    assert kv._internal_kv_put("a/2", "two", namespace=ns) is False  # str is encoded
    assert kv._internal_kv_exists(b"a/2", namespace=ns)
    assert sorted(kv._internal_kv_list(b"a/", namespace=ns)) == [b"a/1", b"a/2"]
    # Namespaces keep keys apart.
    assert kv._internal_kv_get(b"a/1", namespace="other") is None
    assert kv._internal_kv_del(b"a/", del_by_prefix=True, namespace=ns) == 2
    assert kv._internal_kv_list(b"a/", namespace=ns) == []


def test_internal_kv_rejects_non_bytes_keys(ray_start_2cpu):
    kv = _kv(ray_start_2cpu)
    # Ray asserts; manta raises a TypeError naming the argument.
    with pytest.raises((TypeError, AssertionError)):
        kv._internal_kv_put(12, b"x")


def test_list_jobs_shows_the_running_driver(ray_start_2cpu):
    ray = ray_start_2cpu
    if ray.__name__ == "ray":
        pytest.skip("Ray lists jobs through its dashboard (ray[default])")
    state = importlib.import_module(ray.__name__ + ".util.state")
    me = ray.get_runtime_context().get_job_id()
    jobs = {j.job_id: j for j in state.list_jobs()}
    assert me in jobs
    assert jobs[me].status == "RUNNING"
