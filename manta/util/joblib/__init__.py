"""Joblib on manta (Ray's `ray.util.joblib`).

    from manta.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):
        Parallel(n_jobs=4)(delayed(f)(i) for i in range(100))

Each batch joblib makes is one manta task. Importing this package needs no
joblib; `register_ray()` raises an ImportError saying what to install when
it is missing.
"""

from __future__ import annotations

__all__ = ["register_ray"]


def register_ray() -> None:
    """Registers the joblib parallel backend named "ray"."""
    try:
        from joblib.parallel import register_parallel_backend

        from manta.util.joblib.ray_backend import RayBackend
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "joblib":
            raise
        raise ImportError("manta.util.joblib needs joblib, which is not installed: pip install joblib") from e
    register_parallel_backend("ray", RayBackend)
