"""What is checked where a program writes it: arguments bound against the
signature at .remote(), option values, the size of an exported function,
and Ray's `_remote(args=..., kwargs=..., **options)`.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import pytest

pytestmark = pytest.mark.timeout(90)


def test_wrong_arguments_fail_at_remote_for_tasks_and_actor_methods(ray_start):
    ray = ray_start

    @ray.remote
    def f(a, b=0, *, c):
        return a + b + c

    @ray.remote
    class A:
        def __init__(self, x):
            self.x = x

        def m(self, y, **kw):
            return self.x + y

    assert ray.get(f.remote(1, c=2)) == 3
    with pytest.raises(TypeError):
        f.remote(1)  # c is missing
    with pytest.raises(TypeError):
        f.remote(1, 2, 3, c=4)
    with pytest.raises(TypeError):
        A.remote()
    a = A.remote(10)
    assert ray.get(a.m.remote(1, z=5)) == 11
    with pytest.raises(TypeError):
        a.m.remote()

    @ray.remote
    def through_a_task(handle):
        try:
            handle.m.remote(1, 2)
        except TypeError:
            return "refused in the task too"
        return "accepted"

    assert ray.get(through_a_task.remote(a)) == "refused in the task too"


def test_option_values_are_checked_with_rays_messages(ray_start):
    ray = ray_start

    def f():
        return 1

    with pytest.raises(TypeError, match="The type of keyword 'max_retries'"):
        ray.remote(max_retries=0.5)(f)
    with pytest.raises(ValueError, match="only accepts None, 0, -1 or a positive integer"):
        ray.remote(max_retries=-2)(f)
    with pytest.raises(ValueError, match="cannot go beyond 0.0001"):
        ray.remote(resources={"custom": 0.0000001})(f)
    with pytest.raises(ValueError):
        ray.remote(label_selector={"bad key!": "x"})(f)
    ray.remote(label_selector={"ray.io/market-type": "!in(spot, preemptible)"})(f)
    with pytest.raises((TypeError, AssertionError)):  # Ray: AssertionError

        @ray.remote()
        def g():
            pass


def test_a_function_too_large_to_export_is_refused_with_its_size(ray_start):
    ray = ray_start
    big = bytearray(101 * 10**6)

    @ray.remote
    def f():
        return len(big)

    with pytest.raises(ValueError, match="too large"):
        f.remote()


def test_underscore_remote_takes_args_kwargs_and_options(ray_start):
    ray = ray_start

    @ray.remote
    def f(x, y=0):
        return x + y

    @ray.remote
    class A:
        def pair(self, a, b=0):
            return a, b

    assert ray.get(f._remote(args=[1], kwargs={"y": 2})) == 3
    r1, r2 = A._remote().pair._remote(args=["a"], kwargs={"b": "b"}, num_returns=2)
    assert ray.get([r1, r2]) == ["a", "b"]


def test_authentication_error_is_a_ray_error(ray_start):
    ray = ray_start
    err = ray.exceptions.AuthenticationError("Token is missing")
    assert isinstance(err, ray.exceptions.RayError) and "Token is missing" in str(err)


def test_a_namespace_must_be_a_non_empty_string_wherever_it_is_given(ray_clean):
    ray = ray_clean
    with pytest.raises(TypeError):
        ray.init(namespace=123)
    ray.shutdown()
    with pytest.raises(ValueError):
        ray.init(namespace="")
    ray.shutdown()
    ray.init(num_cpus=1, namespace="abc")

    @ray.remote
    class A:
        pass

    with pytest.raises(TypeError):
        A.options(namespace=123).remote()
    with pytest.raises(ValueError):
        A.options(namespace="").remote()
    a = A.options(name="ns_checked", namespace="elsewhere").remote()
    with pytest.raises(TypeError):
        ray.get_actor("ns_checked", namespace=123)
    with pytest.raises(ValueError):
        ray.get_actor("ns_checked", namespace="")
    assert ray.get_actor("ns_checked", namespace="elsewhere")._actor_id == a._actor_id
