"""A first manta program: parallel tasks, an actor, a large array by reference.

Run it with `make demo`. Replace `import manta as ray` with `import ray` and
it runs on Ray unchanged.
"""

import time

import numpy as np

import manta as ray


@ray.remote
def square(x: int) -> int:
    time.sleep(0.1)  # pretend to work, so parallelism shows
    return x * x


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> int:
        self.count += n
        return self.count


@ray.remote
def column_means(matrix: np.ndarray) -> np.ndarray:
    # `matrix` is a read-only view of the shared-memory store: no copy was made.
    return matrix.mean(axis=0)


def main() -> None:
    start = time.perf_counter()
    ray.init()
    print(f"cluster up in {time.perf_counter() - start:.2f} s: {ray.cluster_resources()['CPU']:.0f} CPUs")

    t = time.perf_counter()
    squares = ray.get([square.remote(i) for i in range(8)])
    print(f"8 tasks of 0.1 s each took {time.perf_counter() - t:.2f} s in parallel: {squares}")

    counter = Counter.remote()
    for i in range(1, 4):
        counter.add.remote(i)
    print(f"the actor counted to {ray.get(counter.add.remote(0))}")

    matrix = np.random.default_rng(0).random((2_000, 2_500))  # 40 MB
    ref = ray.put(matrix)  # stored once in shared memory
    means = ray.get([column_means.remote(ref) for _ in range(4)])
    ok = all(np.allclose(m, matrix.mean(axis=0)) for m in means)
    view = ray.get(ref)
    print(
        f"4 tasks read one {matrix.nbytes / 1e6:.0f} MB array by reference: results match={ok}; "
        f"get() returned a read-only zero-copy view: writeable={view.flags.writeable}"
    )

    @ray.remote
    def greet(name: str) -> None:
        print(f"hello, {name}, from a worker")

    ray.get(greet.remote("manta"))
    ray.shutdown()


if __name__ == "__main__":
    main()
