"""Public utilities (Ray's `ray.util`)."""

from manta.util import scheduling_strategies
from manta.util.actor_pool import ActorPool
from manta.util.errors import error_of
from manta.util.executor import Executor
from manta.util.helpers import as_completed, map_unordered
from manta.util.names import get_node_ip_address, list_named_actors
from manta.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from manta.util.serialization import deregister_serializer, register_serializer

__all__ = [
    "ActorPool",
    "Executor",
    "as_completed",
    "map_unordered",
    "error_of",
    "deregister_serializer",
    "register_serializer",
    "get_node_ip_address",
    "list_named_actors",
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
    "scheduling_strategies",
]
