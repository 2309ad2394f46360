"""Dask on manta (Ray's `ray.util.dask`): a dask scheduler whose tasks are
manta tasks.

    from manta.util.dask import enable_dask_on_ray, ray_dask_get
    dask.compute(x, scheduler=ray_dask_get)

Importing this package needs no dask; its names load dask on first use and
raise an ImportError saying what to install when it is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "disable_dask_on_ray",
    "enable_dask_on_ray",
    "ray_dask_get",
    "ray_dask_get_sync",
    "ray_dask_persist",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'manta.util.dask' has no attribute {name!r}")
    try:
        module = importlib.import_module("manta.util.dask.scheduler")
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "dask":
            raise
        raise ImportError(
            f"manta.util.dask.{name} needs dask, which is not installed: pip install 'dask[array,dataframe]'"
        ) from e
    value = getattr(module, name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from manta.util.dask.scheduler import (
        disable_dask_on_ray,
        enable_dask_on_ray,
        ray_dask_get,
        ray_dask_get_sync,
        ray_dask_persist,
    )
