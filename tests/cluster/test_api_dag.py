"""The DAG API, as in Ray: `.bind()` on remote functions, actor classes and
actor methods builds a graph; `execute()` runs it with its inputs and gives
refs as `.remote()` does.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import importlib

import pytest

pytestmark = pytest.mark.timeout(120)


def _dag(ray):
    return importlib.import_module(f"{ray.__name__}.dag")


def test_a_graph_of_tasks_runs_with_its_inputs(ray_start):
    ray = ray_start
    dag_api = _dag(ray)

    @ray.remote
    def double(x):
        return 2 * x

    @ray.remote
    def add(a, b):
        return a + b

    with dag_api.InputNode() as inp:
        dag = add.bind(double.bind(inp[0]), inp[1])
    ref = dag.execute(3, 1)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 7
    assert ray.get(dag.execute(10, 5)) == 25  # runs again, afresh


def test_inputs_by_keyword_and_options_on_a_bound_call(ray_start):
    ray = ray_start
    dag_api = _dag(ray)

    @ray.remote
    def scale(x, by):
        return x * by

    with dag_api.InputNode() as inp:
        dag = scale.options(num_cpus=1).bind(inp.x, by=inp.by)
    assert ray.get(dag.execute(x=4, by=3)) == 12


def test_an_actor_and_its_methods_in_a_graph(ray_start):
    ray = ray_start
    dag_api = _dag(ray)

    @ray.remote
    class Acc:
        def __init__(self, start):
            self.total = start

        def add(self, x):
            self.total += x
            return self.total

    @ray.remote
    def inc(x):
        return x + 1

    with dag_api.InputNode() as inp:
        acc = Acc.bind(100)
        dag = dag_api.MultiOutputNode([acc.add.bind(inp), inc.bind(inp)])
    refs = dag.execute(5)
    assert ray.get(refs) == [105, 6]
    # A method of a live actor binds too.
    live = Acc.remote(0)
    assert ray.get(live.add.bind(7).execute()) == 7
    assert ray.get(live.add.bind(1).execute()) == 8


def test_a_node_used_twice_runs_once(ray_start):
    ray = ray_start
    dag_api = _dag(ray)

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def next(self):
            self.n += 1
            return self.n

    @ray.remote
    def pair(a, b):
        return (a, b)

    counter = Counter.remote()
    with dag_api.InputNode():
        once = counter.next.bind()
        dag = pair.bind(once, once)
    assert ray.get(dag.execute()) == (1, 1)
