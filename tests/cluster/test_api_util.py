"""Ray's util layer and the names Ray programs import: ray.actor (exit_actor,
__ray_terminate__, __ray_ready__), ActorPool, util.queue,
util.multiprocessing, the actor state API.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import importlib
import os

import pytest

pytestmark = pytest.mark.timeout(90)


def _sub(ray, name):
    return importlib.import_module(f"{ray.__name__}.{name}")


def test_exit_actor_ends_the_actor_through_its_atexit_handlers(ray_start, tmp_path, wait_for):
    ray = ray_start
    marker = str(tmp_path / "atexit")
    backend = ray.__name__

    @ray.remote(max_restarts=3)
    class A:
        def __init__(self, path):
            import atexit

            atexit.register(lambda: open(path, "w").write("bye"))

        def pid(self):
            return os.getpid()

        def leave(self):
            import importlib

            importlib.import_module(f"{backend}.actor").exit_actor()

    a = A.remote(marker)
    ray.get(a.pid.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.leave.remote())
    wait_for(lambda: os.path.exists(marker))
    assert open(marker).read() == "bye"
    # On purpose: not restarted, despite max_restarts.
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.pid.remote(), timeout=20)
    with pytest.raises(TypeError, match="non-actor"):
        _sub(ray, "actor").exit_actor()


def test_ray_terminate_runs_after_earlier_calls_and_ready_answers(ray_start):
    ray = ray_start

    @ray.remote
    class A:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    a = A.remote()
    assert ray.get(a.__ray_ready__.remote()) is True
    refs = [a.incr.remote() for _ in range(5)]
    ray.wait([a.__ray_terminate__.remote()])
    assert ray.get(refs) == [1, 2, 3, 4, 5]
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.incr.remote(), timeout=20)


def test_inheriting_from_an_actor_class_is_refused(ray_start):
    ray = ray_start

    @ray.remote
    class Base:
        pass

    with pytest.raises(_sub(ray, "actor").ActorClassInheritanceException, match="not currently supported"):

        class Derived(Base):  # noqa: F841
            pass


def test_actor_pool_map_and_unordered(ray_start):
    ray = ray_start
    ActorPool = _sub(ray, "util").ActorPool

    @ray.remote
    class Doubler:
        def double(self, v):
            return 2 * v

    pool = ActorPool([Doubler.remote() for _ in range(2)])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    pool.submit(lambda a, v: a.double.remote(v), 21)
    assert pool.get_next(timeout=20) == 42
    assert pool.has_free() and not pool.has_next()


def test_queue_put_get_batch_and_limits(ray_start):
    ray = ray_start
    q_mod = _sub(ray, "util.queue")
    q = q_mod.Queue(2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(q_mod.Full):
        q.put(3, timeout=0.1)
    with pytest.raises(q_mod.Full):
        q.put_nowait_batch([3])
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(q_mod.Empty):
        q.get(timeout=0.1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)

    @ray.remote
    def producer(queue):
        queue.put("from a task")

    ray.get(producer.remote(q))
    assert q.get(timeout=20) == "from a task"
    q.shutdown()


def test_multiprocessing_pool(ray_start, tmp_path):
    ray = ray_start
    mp = _sub(ray, "util.multiprocessing")

    def init(d):
        open(os.path.join(d, str(os.getpid())), "w").close()

    pool = mp.Pool(processes=2, initializer=init, initargs=(str(tmp_path),))
    assert len(os.listdir(tmp_path)) == 2
    assert pool.map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
    assert pool.starmap(lambda a, b: a + b, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.apply(lambda a, b=0: a - b, (5,), {"b": 2}) == 3

    def fail(x):
        if x == 3:
            raise KeyError("three")
        return x

    results = list(pool.imap(fail, range(5)))
    assert results[:3] == [0, 1, 2] and results[4] == 4
    # Ray's PoolTaskError (ray.util.multiprocessing.pool), holding the exception.
    assert type(results[3]).__name__ == "PoolTaskError" and isinstance(results[3].underlying, KeyError)
    with pytest.raises(KeyError):
        pool.map(fail, range(5))
    r = pool.map_async(fail, range(3))
    r.wait(timeout=20)
    assert r.ready() and r.successful() and r.get() == [0, 1, 2]
    pool.close()
    pool.join()
    with pytest.raises(ValueError):
        pool.map(fail, range(2))


def test_list_actors_and_get_actor(ray_start, wait_for):
    ray = ray_start
    state = _sub(ray, "util.state")

    @ray.remote
    class Named:
        def pid(self):
            return os.getpid()

    a = Named.options(name="listed-actor").remote()
    pid = ray.get(a.pid.remote())
    aid = a._actor_id.hex()
    mine = state.list_actors(filters=[("actor_id", "=", aid)])
    assert len(mine) == 1
    rec = mine[0]
    assert (rec.state, rec.name, rec.pid) == ("ALIVE", "listed-actor", pid)
    assert rec.class_name == "test_list_actors_and_get_actor.<locals>.Named"  # the qualified name, as Ray
    ray.kill(a)
    wait_for(lambda: state.get_actor(id=aid).state == "DEAD")
    alive = state.list_actors(filters=[("state", "=", "ALIVE")])
    assert all(r.actor_id != aid for r in alive)


def test_workers_find_the_driver_scripts_directory_and_code_search_path(ray, backend_name, tmp_path):
    import subprocess
    import sys

    here = tmp_path / "driver dir"
    lib = tmp_path / "lib"
    here.mkdir()
    lib.mkdir()
    (here / "beside_driver.py").write_text("VALUE = 'beside'\n")
    (lib / "on_search_path.py").write_text("VALUE = 'searched'\n")
    (here / "drv.py").write_text(
        f"import {backend_name} as ray\n"
        f"from {backend_name}.job_config import JobConfig\n"
        "@ray.remote\n"
        "def f():\n"
        "    import beside_driver, on_search_path\n"
        "    return beside_driver.VALUE, on_search_path.VALUE\n"
        # Ray imports the driver's module from the code search path: guard it.
        "if __name__ == '__main__':\n"
        f"    ray.init(num_cpus=1, job_config=JobConfig(code_search_path=[{str(lib)!r}], ray_namespace='jobns'))\n"
        "    print(ray.get(f.remote()), ray.get_runtime_context().namespace)\n"
        "    ray.shutdown()\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo)
    out = subprocess.run(
        [sys.executable, str(here / "drv.py")], capture_output=True, text=True, timeout=120, env=env, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert "('beside', 'searched') jobns" in out.stdout


def test_omp_num_threads_follows_the_tasks_cpus_unless_set(ray_start):
    ray = ray_start
    if "OMP_NUM_THREADS" in os.environ:
        pytest.skip("OMP_NUM_THREADS is set in this environment: workers keep it")
    RuntimeEnv = _sub(ray, "runtime_env").RuntimeEnv

    @ray.remote
    def f():
        return os.environ.get("OMP_NUM_THREADS")

    @ray.remote
    class A:
        def f(self):
            return os.environ.get("OMP_NUM_THREADS")

    assert ray.get(f.options(num_cpus=2).remote()) == "2"
    assert ray.get(f.remote()) == "1"
    assert ray.get(f.options(num_cpus=0.25).remote()) == "1"
    assert ray.get(f.options(runtime_env=RuntimeEnv(env_vars={"OMP_NUM_THREADS": "3"})).remote()) == "3"
    assert ray.get(A.remote().f.remote()) == "1"
    assert ray.get(A.options(num_cpus=2).remote().f.remote()) == "2"


def test_list_named_actors_and_node_ip(ray_start):
    ray = ray_start
    util = _sub(ray, "util")

    @ray.remote
    class N:
        def ok(self):
            return True

    a = N.options(name="named-one").remote()
    b = N.options(name="named-elsewhere", namespace="other-ns").remote()
    ray.get([a.ok.remote(), b.ok.remote()])
    assert "named-one" in util.list_named_actors()
    assert "named-elsewhere" not in util.list_named_actors()
    everywhere = util.list_named_actors(all_namespaces=True)
    assert {"name": "named-elsewhere", "namespace": "other-ns"} in everywhere
    ray.kill(a)
    ray.kill(b)
    assert util.get_node_ip_address().count(".") == 3


def test_actor_class_attributes_ray_call_and_dir(ray_start):
    ray = ray_start

    @ray.remote
    class Foo:
        K = 5

        def __init__(self, x=1):
            self.x = x

        @classmethod
        def make(cls, x):
            return cls(x)

        def method_one(self):
            return Foo.K

    assert Foo.K == 5 and Foo.make(3).x == 3  # read through the actor class
    f = Foo.remote(4)
    assert ray.get(f.method_one.remote()) == 5
    assert ray.get(f.__ray_call__.remote(lambda self, y: self.x + y, y=2)) == 6
    assert "method_one" in dir(f) and {"__ray_ready__", "__ray_terminate__", "__ray_call__"} <= set(dir(f))
    assert {"options", "remote", "bind", "method_one"} <= set(dir(Foo))


def test_a_second_driver_joins_by_the_address_init_returned(ray_clean, backend_name):
    import subprocess
    import sys

    ray = ray_clean
    info = ray.init(num_cpus=1, namespace="shared-ns")
    try:

        @ray.remote
        class N:
            def hi(self):
                return "hi"

        n = N.options(name="shared", lifetime="detached").remote()
        ray.get(n.hi.remote())
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        drv = (
            f"import {backend_name} as ray\n"
            f"ray.init(address={info['address']!r}, namespace='shared-ns')\n"
            "print('got', ray.get(ray.get_actor('shared').hi.remote()))\n"
            "ray.shutdown()\n"
        )
        out = subprocess.run([sys.executable, "-c", drv], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONPATH=repo))
        assert "got hi" in out.stdout, out.stderr
        ray.kill(n)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------
# Executor (beyond Ray: Ray #29456)
# --------------------------------------------------------------------------


def test_executor_runs_calls_as_tasks_with_futures(ray_start, backend_name, tmp_path):
    if backend_name == "ray":
        pytest.skip("manta.util.Executor is beyond Ray")
    import concurrent.futures
    import importlib
    import time

    ray = ray_start
    util = importlib.import_module(f"{ray.__name__}.util")

    def square(x):
        return x * x

    def fails():
        raise KeyError("nope")

    def nap(s):
        time.sleep(s)
        return s

    with util.Executor(max_workers=2, num_cpus=1) as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        assert list(ex.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
        with pytest.raises(KeyError):
            ex.submit(fails).result(timeout=30)
        long = ex.submit(nap, 60)
        time.sleep(0.5)
        assert long.cancel() and long.cancelled()  # a running task is cancelled too
        assert ex.submit(square, 9).result(timeout=30) == 81
    # max_workers=1: one in flight, the rest wait and can be dropped at shutdown.
    ex = util.Executor(max_workers=1)
    first, second = ex.submit(nap, 0.5), ex.submit(nap, 0.5)
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == 0.5 and second.cancelled()
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_error_of_tells_a_failure_without_fetching_the_value(ray_start, backend_name):
    if backend_name == "ray":
        pytest.skip("manta.util.error_of is beyond Ray (Ray #52189)")
    import importlib

    ray = ray_start
    util = importlib.import_module(f"{ray.__name__}.util")
    np = pytest.importorskip("numpy")

    @ray.remote
    def fails():
        raise ValueError("bad input")

    @ray.remote
    def big():
        return np.zeros(10_000_000)  # 80 MB, left in the store

    @ray.remote
    def forever():
        import time

        time.sleep(60)

    assert util.error_of(big.remote(), timeout=60) is None
    err = util.error_of(fails.remote(), timeout=60)
    assert isinstance(err, ValueError) and "bad input" in str(err)
    stuck = forever.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        util.error_of(stuck, timeout=0.2)
    ray.cancel(stuck, force=True)
    with pytest.raises(TypeError):
        util.error_of("not a ref")
