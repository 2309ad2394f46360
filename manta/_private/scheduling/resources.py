"""Resource amounts as fixed-point integers (1/10000 units), as Ray counts them.

Floats drift when 0.1 CPU is taken and given back a thousand times; integer
units do not.
"""

from __future__ import annotations

from collections.abc import Mapping

from manta._private.protocol.quantities import quantity_problem

UNIT = 10_000
ResourceSet = dict[str, int]


def to_units(resources: Mapping[str, float]) -> ResourceSet:
    out: ResourceSet = {}
    for name, amount in resources.items():
        why = quantity_problem(name, amount)
        if why:
            raise ValueError(why)
        units = round(amount * UNIT)
        if units:
            out[name] = units
    return out


def to_float(resources: Mapping[str, int]) -> dict[str, float]:
    return {k: v / UNIT for k, v in resources.items()}


def fits(need: Mapping[str, int], available: Mapping[str, int]) -> bool:
    return all(available.get(k, 0) >= v for k, v in need.items())


def subtract(available: dict[str, int], amount: Mapping[str, int]) -> None:
    for k, v in amount.items():
        available[k] = available.get(k, 0) - v


def add(available: dict[str, int], amount: Mapping[str, int]) -> None:
    for k, v in amount.items():
        available[k] = available.get(k, 0) + v
