"""Checks of task and actor option values, with Ray's rules and messages
(a program that passes a wrong option learns it where it wrote it)."""

from __future__ import annotations

import re
from typing import Any

from manta._private.protocol.quantities import quantity_problem

_NONE = type(None)
_NUMBER = (int, float, _NONE)
TYPES: dict[str, tuple[type, ...]] = {
    "num_cpus": _NUMBER,
    "num_gpus": _NUMBER,
    "memory": _NUMBER,
    "object_store_memory": _NUMBER,
    "resources": (dict, _NONE),
    "max_calls": (int, _NONE),
    "max_retries": (int, _NONE),
    "num_returns": (int, str, _NONE),
    "max_restarts": (int, _NONE),
    "max_task_retries": (int, _NONE),
    "max_concurrency": (int, _NONE),
    "max_pending_calls": (int, _NONE),
    "name": (str, _NONE),
    "namespace": (str, _NONE),
    "lifetime": (str, _NONE),
    "label_selector": (dict, _NONE),
    "fallback_strategy": (list, _NONE),
    "runtime_env": (dict, _NONE),
    "concurrency_groups": (dict, list, _NONE),
}
_RETRIES = "The keyword '{}' only accepts None, 0, -1 or a positive integer, where -1 represents infinity."
# Resource quantities are kept to 1/10,000 of a unit (as Ray does).
_PRECISION = 1e-4


def validate(options: dict[str, Any]) -> None:
    """Raises TypeError or ValueError naming the first option that is wrong."""
    for key, value in options.items():
        types = TYPES.get(key)
        if types is not None and not isinstance(value, types):
            raise TypeError(f"The type of keyword '{key}' must be {types}, but received type {type(value)}")
    if (v := options.get("max_calls")) is not None and v < 0:
        raise ValueError("The keyword 'max_calls' only accepts None, 0 or a positive integer")
    n = options.get("num_returns")
    if n is not None and not (isinstance(n, int) and n >= 0) and n not in ("streaming", "dynamic"):
        raise ValueError(
            "The keyword 'num_returns' only accepts None, a non-negative integer, "
            "'streaming' (for generators), or 'dynamic'"
        )
    for key in ("max_retries", "max_restarts", "max_task_retries"):
        if (v := options.get(key)) is not None and v < -1:
            raise ValueError(_RETRIES.format(key))
    for key in ("num_cpus", "num_gpus", "memory", "object_store_memory"):
        if (v := options.get(key)) is not None:
            _check_quantity(key, v)
    for name, v in (options.get("resources") or {}).items():
        if not isinstance(v, (int, float)):
            raise TypeError(f"The quantity of resource {name} must be a number, got {type(v).__name__}")
        _check_quantity(name, v)
    if options.get("label_selector") is not None:
        check_label_selector(options["label_selector"])
    if options.get("fallback_strategy") is not None:
        _check_fallback(options["fallback_strategy"])


def _check_quantity(name: str, v: float) -> None:
    why = quantity_problem(name, v)
    if why:
        raise ValueError(why[0].upper() + why[1:])
    if abs(v - round(v / _PRECISION) * _PRECISION) > 1e-12 and v < 1 / _PRECISION:
        raise ValueError(f"The precision of the fractional quantity of resource {name} cannot go beyond 0.0001")


# Label keys and values as Kubernetes has them (and Ray follows): an
# optional DNS-subdomain prefix and '/', then a name of at most 63
# characters that starts and ends with a letter or digit.
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IN = re.compile(r"^(!?)in\((.*)\)$")


def _check_label_key(key: Any) -> None:
    if not isinstance(key, str):
        raise ValueError(f"Label key must be a string, got {type(key).__name__}")
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        raise ValueError(f"Invalid label key prefix {prefix!r} in {key!r}: it must be a DNS subdomain")
    if not _NAME.match(name):
        raise ValueError(
            f"Invalid label key name {name!r}: at most 63 characters, letters, digits, '-', '_' "
            f"or '.', starting and ending with a letter or digit"
        )


def _check_label_value(value: str, key: str) -> None:
    if value and not _NAME.match(value):
        raise ValueError(
            f"Invalid label value {value!r} for {key!r}: at most 63 characters, letters, digits, "
            f"'-', '_' or '.', starting and ending with a letter or digit"
        )


def check_label_selector(selector: Any) -> None:
    """A selector maps label keys to a value, "!value", "in(a, b)" or "!in(a, b)"."""
    if not isinstance(selector, dict):
        raise TypeError(f"label_selector must be a dict, got {type(selector).__name__}")
    for key, cond in selector.items():
        _check_label_key(key)
        if not isinstance(cond, str):
            raise ValueError(f"The condition for label {key!r} must be a string, got {type(cond).__name__}")
        m = _IN.match(cond)
        if m:
            values = [v.strip() for v in m.group(2).split(",")]
            if not values or any(not v for v in values):
                raise ValueError(f"Invalid label condition {cond!r} for {key!r}: in(...) takes values separated by commas")
            for v in values:
                _check_label_value(v, key)
        elif "(" in cond or ")" in cond:
            raise ValueError(
                f"Invalid label condition {cond!r} for {key!r}: use a value, '!value', 'in(a, b)' or '!in(a, b)'"
            )
        else:
            _check_label_value(cond[1:] if cond.startswith("!") else cond, key)


def _check_fallback(strategy: Any) -> None:
    if not isinstance(strategy, list):
        raise TypeError(f"fallback_strategy must be a list, got {type(strategy).__name__}")
    for option in strategy:
        if not isinstance(option, dict):
            raise ValueError(f"Each fallback_strategy entry must be a dict, got {type(option).__name__}")
        bad = set(option) - {"label_selector"}
        if bad:
            raise ValueError(f"Unsupported fallback_strategy option(s) {sorted(bad)}: only 'label_selector'")
        check_label_selector(option["label_selector"])



def concurrency_groups(value: Any) -> dict[str, int]:
    """Ray's `concurrency_groups` option, {name: max_concurrency} or a list
    of (name, max_concurrency), as a dict. Sizes are checked where the actor
    starts (check_group_sizes), as in Ray."""
    if not value:
        return {}
    items = value.items() if isinstance(value, dict) else value
    out: dict[str, int] = {}
    for item in items:
        try:
            name, size = item
        except (TypeError, ValueError):
            raise ValueError(
                f"concurrency_groups takes {{name: max_concurrency}} or [(name, max_concurrency)], got {value!r}"
            ) from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"a concurrency group's name must be a non-empty string, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"concurrency group {name!r}: max_concurrency must be an int, got {type(size).__name__}")
        out[name] = size
    return out



def check_namespace(namespace: object) -> None:
    """None (the job's), or a non-empty string, as Ray requires."""
    if namespace is None:
        return
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}")
    if not namespace:
        raise ValueError('namespace must not be "" (leave it out for the default)')
