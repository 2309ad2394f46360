"""The cluster's key-value store, kept by the head (Ray's `ray.experimental.internal_kv`).

Keys and values are bytes (str is encoded as UTF-8). With a head on Redis
(`manta start --head --storage redis://...`) entries survive a head restart.
"""

from __future__ import annotations

from typing import Any

from manta._private.protocol import messages as m


def _bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")


def _ask(msg: Any) -> m.KvValue:
    from manta._private.session import runtime as _runtime

    rt = _runtime()
    return rt.call_head(msg)  # type: ignore[no-any-return]


def _ns(namespace: str | bytes | None) -> str:
    if namespace is None:
        return ""
    return namespace.decode() if isinstance(namespace, bytes) else namespace


def _internal_kv_initialized() -> bool:
    from manta._private.runtime import context

    return context.current() is not None


def _internal_kv_put(
    key: str | bytes, value: str | bytes, overwrite: bool = True, *, namespace: str | bytes | None = None
) -> bool:
    """Stores `value`; returns True if the key already existed (and was kept
    unless `overwrite`)."""
    reply = _ask(m.KvPut(namespace=_ns(namespace), key=_bytes(key, "key"),
                         value=_bytes(value, "value"), overwrite=overwrite))
    return bool(reply.count)


def _internal_kv_get(key: str | bytes, *, namespace: str | bytes | None = None) -> bytes | None:
    return _ask(m.KvGet(namespace=_ns(namespace), key=_bytes(key, "key"))).value


def _internal_kv_exists(key: str | bytes, *, namespace: str | bytes | None = None) -> bool:
    return _internal_kv_get(key, namespace=namespace) is not None


def _internal_kv_del(
    key: str | bytes, *, del_by_prefix: bool = False, namespace: str | bytes | None = None
) -> int:
    """Deletes the key (or every key starting with it); returns how many went."""
    reply = _ask(m.KvDel(namespace=_ns(namespace), key=_bytes(key, "key"), by_prefix=del_by_prefix))
    return reply.count


def _internal_kv_list(prefix: str | bytes, *, namespace: str | bytes | None = None) -> list[bytes]:
    return _ask(m.KvList(namespace=_ns(namespace), prefix=_bytes(prefix, "prefix"))).keys
