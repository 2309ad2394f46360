"""`list_named_actors` and `get_node_ip_address` (Ray's `ray.util`)."""

from __future__ import annotations

from typing import Any

from manta._private.protocol import messages as m


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of the live named actors in this job's namespace; with
    `all_namespaces`, dicts of "name" and "namespace" for every namespace."""
    from manta._private.session import runtime

    rt = runtime()
    actors = [a for a in rt.call_head(m.ListActors()).actors if a.name and a.state is not m.ActorStatus.DEAD]
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in actors]
    return [a.name for a in actors if a.namespace == rt.namespace]


def get_node_ip_address() -> str:
    """The IP address of the node this process runs on."""
    from manta._private.session import runtime

    rt = runtime()
    return rt.session.node_ip or "127.0.0.1"
