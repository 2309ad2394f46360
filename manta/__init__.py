"""manta: Ray's Core API on a lighter, faster, secure-by-default runtime.

`import manta as ray` runs a Ray Core program unchanged.
"""

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

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "RemoteFunction",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "util",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
]
