"""Whether a ref failed, without fetching its value (beyond Ray: Ray #52189).

    err = manta.util.error_of(ref)        # waits until the ref is ready
    if err is None: ...                   # get(ref) would return a value
    elif isinstance(err, ValueError): ... # what get(ref) would raise

A value that lives in an object store, however large, is never read:
errors travel inline, so the answer costs what a small `get` does.
"""

from __future__ import annotations

from typing import Any


def error_of(ref: Any, timeout: float | None = None) -> BaseException | None:
    """The exception `get(ref)` would raise, or None if it would return a
    value. Raises GetTimeoutError if the ref is not ready within `timeout`."""
    from manta._private.session import runtime

    return runtime().error_of(ref, timeout)


__all__ = ["error_of"]
