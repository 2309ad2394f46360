"""What a resource quantity must be: a finite, non-negative number no larger
than `MAX_QUANTITY`. Apart from `checks` (which applies them to messages),
so what validates `init()`'s arguments loads no message types: the driver
checks them before it starts the head, and the sooner it starts, the
sooner init() returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# The largest quantity of one resource: an exabyte of memory. Past it a
# value is a mistake or an attack, and `inf` would overflow integer units.
MAX_QUANTITY = 1e18


def quantity_problem(name: str, amount: Any) -> str:
    """Why `amount` is not a quantity of resource `name` ("" if it is one)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return f"the quantity of resource {name!r} must be a number, got {type(amount).__name__}"
    if not math.isfinite(amount) or amount < 0:
        return f"the quantity of resource {name!r} must be a finite non-negative number, got {amount!r}"
    if amount > MAX_QUANTITY:
        return f"the quantity of resource {name!r} is {amount:g}, more than the largest allowed ({MAX_QUANTITY:g})"
    return ""


def resources_problem(resources: Any) -> str:
    """Why `resources` is not a map of resource names to quantities ("" if it is one)."""
    if not isinstance(resources, Mapping):
        return f"resources must be a dict, got {type(resources).__name__}"
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            return f"a resource name must be a non-empty string, got {name!r}"
        why = quantity_problem(name, amount)
        if why:
            return why
    return ""
