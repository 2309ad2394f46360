"""cloudpickle where Ray programs look for it (`ray.cloudpickle`): the
cloudpickle package itself, plus `dumps_debug`."""

from __future__ import annotations

import pickle
from typing import Any

from cloudpickle import (
    CloudPickler,
    Pickler,
    dump,
    dumps,
    load,
    loads,
    register_pickle_by_value,
    unregister_pickle_by_value,
)

__all__ = [
    "CloudPickler",
    "Pickler",
    "dump",
    "dumps",
    "dumps_debug",
    "load",
    "loads",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]


def dumps_debug(obj: Any, *args: Any, **kwargs: Any) -> bytes:
    """`dumps`, raising TypeError that names what in `obj` cannot be pickled."""
    try:
        return dumps(obj, *args, **kwargs)
    except (TypeError, pickle.PicklingError, AttributeError) as e:
        from manta._private.runtime.serialization import describe_unpicklable

        raise TypeError(describe_unpicklable(obj, e)) from e
