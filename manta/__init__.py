"""manta: Ray's Core API on a lighter, faster, secure-by-default runtime.

`import manta as ray` runs a Ray Core program unchanged.

Names are loaded on first use, so `import manta` costs a millisecond and the
head and node agent processes import only what they run.
"""

from __future__ import annotations

import functools as _functools
from typing import TYPE_CHECKING, Any

from manta._private.version import VERSION as __version__  # noqa: F401 (the package's version)

_EXPORTS = {
    "available_resources": "manta._private.api",
    "cancel": "manta._private.api",
    "cluster_resources": "manta._private.api",
    "get": "manta._private.api",
    "get_actor": "manta._private.api",
    "get_gpu_ids": "manta._private.api",
    "get_runtime_context": "manta._private.api",
    "init": "manta._private.session",
    "is_initialized": "manta._private.session",
    "kill": "manta._private.api",
    "nodes": "manta._private.api",
    "put": "manta._private.api",
    "shutdown": "manta._private.session",
    "wait": "manta._private.api",
    "timeline": "manta._private.api",
    "java_function": "manta._private.api",
    "java_actor_class": "manta._private.api",
    "client": "manta._private.api",
    "ActorClass": "manta._private.remote",
    "ActorHandle": "manta._private.remote",
    "RemoteFunction": "manta._private.remote",
    "method": "manta._private.remote",
    "remote": "manta._private.remote",
    "ObjectRef": "manta._private.runtime.object_ref",
    "ObjectID": "manta._private.runtime.object_ref",
    "ObjectRefGenerator": "manta._private.runtime.generators",
    "DynamicObjectRefGenerator": "manta._private.runtime.generators",
}
_SUBMODULES = {
    "actor", "cloudpickle", "dag", "exceptions", "experimental", "job_config", "remote_function", "runtime_env", "types",
    "util",
}

__all__ = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "available_resources",
    "cancel",
    "client",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "java_actor_class",
    "java_function",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "util",
    "wait",
]


def __getattr__(name: str) -> Any:
    import importlib  # here, not at the top: no stdlib module is reachable as manta.X (Ray's rule)

    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"manta.{name}")
    else:
        raise AttributeError(f"module 'manta' has no attribute {name!r}")
    globals()[name] = value
    return value


def _names() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# What dir(manta) lists: everything exported, loaded or not. Not a function
# of the module itself (a partial), so the module's functions are Ray's.
__dir__ = _functools.partial(_names)
del _names, _functools


if TYPE_CHECKING:
    from manta import exceptions, util
    from manta._private.api import (
        available_resources,
        cancel,
        cluster_resources,
        get,
        get_actor,
        get_gpu_ids,
        get_runtime_context,
        init,
        is_initialized,
        kill,
        nodes,
        put,
        shutdown,
        wait,
    )
    from manta._private.remote import ActorClass, ActorHandle, RemoteFunction, method, remote
    from manta._private.runtime.object_ref import ObjectRef
