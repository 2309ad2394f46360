"""Ray's `ray.experimental.tqdm_ray`: progress bars usable inside tasks and
actors, drawn once on the driver (runtime/progress.py says how).

    from manta.experimental import tqdm_ray

    @manta.remote
    def work(n):
        for _ in tqdm_ray.tqdm(range(n), desc="work"):
            ...

    refs = [work.remote(100) for _ in range(4)]
    for _ in tqdm_ray.tqdm(manta.util.as_completed(refs), total=len(refs), desc="tasks"):
        pass

Needs no tqdm package. A bar in a worker sends its state to the driver at
most every `flush_interval_s` seconds (and when it closes); on the driver
it is drawn at once.
"""

from __future__ import annotations

import builtins
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from manta._private.runtime import context
from manta._private.runtime import progress as _progress

__all__ = ["tqdm", "safe_print"]

# A worker's bars send their state at most this often by default.
DEFAULT_FLUSH_INTERVAL_S = 0.5


def _in_worker() -> bool:
    rt = context.current()
    return rt is not None and not getattr(rt, "is_driver", True)


class tqdm:
    """A progress bar with tqdm's common API (Ray's `tqdm_ray.tqdm`)."""

    def __init__(self, iterable: Iterable[Any] | None = None, desc: str | None = None, total: int | None = None,
                 unit: str | None = None, position: int | None = None, flush_interval_s: float | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._worker = _in_worker()
        self._flush_interval_s = (flush_interval_s if flush_interval_s is not None
                                  else DEFAULT_FLUSH_INTERVAL_S if self._worker else 0.0)
        self._state = _progress.BarState(
            uuid=uuid.uuid4().hex, desc=desc or "", total=total, unit=unit or "it", position=position or 0,
            pid=os.getpid(), ip=_ip() if self._worker else "", started=time.time(),
        )
        self._last_flush = 0.0
        self._dirty = True
        self._closed = False
        self._flush()

    @property
    def n(self) -> float:
        return self._state.n

    @property
    def total(self) -> float | None:
        return self._state.total

    @property
    def desc(self) -> str:
        return self._state.desc

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self._state.desc = desc or ""
        self._dirty = True
        if refresh:
            self._flush()

    def update(self, n: float = 1) -> None:
        self._state.n += n
        self._dirty = True
        self._maybe_flush()

    def refresh(self) -> None:
        self._flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._state.closed = True
        self._send()

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("this tqdm was made without an iterable")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> tqdm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and self._dirty:
                self._flush()
        except Exception:
            pass

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self._flush()

    def _flush(self) -> None:
        if self._dirty and not self._closed:
            self._send()

    def _send(self) -> None:
        self._last_flush = time.monotonic()
        self._dirty = False
        state = _progress.BarState(**{k: getattr(self._state, k) for k in _progress.BarState.__slots__})
        if self._worker:
            import sys

            # One line of this worker's stdout, which goes to the driver (and is kept out of its log file).
            _progress.emit(state, sys.stdout.write)
            sys.stdout.flush()
        else:
            _progress.bars().update(state)


def safe_print(*args: Any, **kwargs: Any) -> None:
    """print(), without breaking the bars (Ray's `tqdm_ray.safe_print`): on the
    driver the text goes above them; in a worker it travels as any output."""
    if _in_worker():
        builtins.print(*args, **kwargs)
        return
    import io

    buf = io.StringIO()
    builtins.print(*args, **{**kwargs, "file": buf})
    _progress.bars().write(buf.getvalue())


def _ip() -> str:
    session = getattr(context.current(), "session", None)
    return getattr(session, "node_ip", "") or "127.0.0.1"
