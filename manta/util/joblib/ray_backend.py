"""The joblib backend: each batch joblib makes runs as one manta task.

At most `n_jobs` batches run at once (`n_jobs=-1`: one per CPU of the
cluster); the others wait in the driver, so a Parallel call takes only the
share of the cluster it asked for. joblib sizes the batches itself from how
long they take (its auto-batching), which keeps the per-task cost small
against the work of a batch.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any

from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from manta._private import api
from manta._private.remote import remote
from manta.exceptions import RayTaskError
from manta.util.executor import Executor

__all__ = ["RayBackend"]


def _run_batch(batch: Callable[[], list[Any]]) -> list[Any]:
    return batch()


@functools.cache
def _run_batch_remote() -> Any:
    # One remote function for every batch of every call, exported once per
    # job; each batch travels as its argument.
    return remote(_run_batch)


class RayBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's "ray" backend on manta. `ray_remote_args` are the tasks'
    options (e.g. `dict(num_cpus=2)`), given to `parallel_backend(...)` or,
    for one call, to `Parallel(...)`."""

    supports_retrieve_callback = True
    supports_return_generator = True
    supports_timeout = True
    # Batches run in other processes: no shared memory with the caller
    # (joblib falls back to threads for require="sharedmem").
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._remote_args = dict(ray_remote_args or {})
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self._running: set[concurrent.futures.Future[Any]] = set()

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            # Counted on the cluster, not this machine (starts one if none).
            cpus = int(api.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> int:
        # kwargs: joblib's memmapping settings (max_nbytes, temp_folder, ...),
        # meant for local pools; arguments travel through the object store.
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            # As joblib's process backends do: one job runs in the caller.
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        options = self._remote_args if ray_remote_args is None else dict(ray_remote_args)
        self._executor = Executor(max_workers=n, **options)
        return n

    def submit(self, func: Callable[[], list[Any]], callback: Callable[[Any], Any] | None = None) -> Any:
        if self._executor is None:
            raise RuntimeError("the ray backend was not configured (joblib calls configure() first)")
        future = self._executor.submit(_run_batch_remote(), func)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> list[Any]:
        try:
            return out.result()  # type: ignore[no-any-return]
        except RayTaskError as e:
            # Raise what the function raised, as joblib's other backends do;
            # the task's error, with the remote traceback, is its cause.
            cause = e.cause
            if isinstance(cause, Exception) and not isinstance(cause, RayTaskError):
                raise cause from e
            raise

    def abort_everything(self, ensure_ready: bool = True) -> None:
        # A batch failed: the other batches' results will not be used, so
        # their tasks are cancelled (running ones too) to free the cluster.
        with self._lock:
            running = list(self._running)
            self._running.clear()
        for future in running:
            future.cancel()
        self._shut_down()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self.parallel._backend_kwargs)

    def terminate(self) -> None:
        self._shut_down()
        self.reset_batch_stats()

    def _shut_down(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
