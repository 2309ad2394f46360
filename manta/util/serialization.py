"""Custom serializers for classes pickle cannot handle (Ray's `ray.util.serialization`).

A serializer registered here applies in this process (driver or worker) to
every value it sends: the class's instances travel as what `serializer`
returns and are rebuilt by `deserializer`. Register it in each process that
sends such values, before or after `init()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from manta._private.runtime import serialization as _serialization


def register_serializer(cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]) -> None:
    _serialization.register_serializer(cls, serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Removes the class's serializer; one that has none is left as it is."""
    _serialization.deregister_serializer(cls)


__all__ = ["deregister_serializer", "register_serializer"]
