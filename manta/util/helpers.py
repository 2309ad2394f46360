"""Ray's `ray.util.as_completed` and `ray.util.map_unordered`: results as
their tasks finish, in batches of `chunk_size` (each batch one `wait()`),
rather than `get()` in submission order.

    for x in tqdm_ray.tqdm(manta.util.as_completed(refs), total=len(refs)):
        ...

Order is not guaranteed: each batch comes in the order `wait()` returns
it (submission order within what is ready).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def _batch(refs: list[Any], chunk_size: int, yield_obj_refs: bool, kwargs: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    import manta

    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    ready, rest = manta.wait(refs, num_returns=min(chunk_size, len(refs)), **kwargs)
    return (ready if yield_obj_refs else manta.get(ready)), rest


def as_completed(refs: Sequence[Any], *, chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False,
                 **kwargs: Any) -> Iterator[Any]:
    """Yields each ref's value (or the ref, with `yield_obj_refs=True`) as
    batches of `chunk_size` of them finish. `kwargs` go to `wait()` (e.g.
    `timeout`: a batch not ready by then is yielded as far as it is)."""
    pending = list(refs)
    while pending:
        done, pending = _batch(pending, chunk_size, yield_obj_refs, kwargs)
        yield from done


def map_unordered(fn: Any, items: Iterable[Any], *, backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False, **kwargs: Any) -> Iterator[Any]:
    """`fn.remote(item)` for each item, at most `backpressure_size` at once
    (None: no bound); yields results as they finish, as `as_completed`."""
    if backpressure_size is not None and backpressure_size < 1:
        raise ValueError("`backpressure_size` must be >= 1 or None")
    pending: list[Any] = []
    for item in items:
        if backpressure_size is not None and len(pending) >= backpressure_size:
            done, pending = _batch(pending, chunk_size, yield_obj_refs, kwargs)
            yield from done
        pending.append(fn.remote(item))
    yield from as_completed(pending, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
