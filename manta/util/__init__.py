"""Public utilities (Ray's `ray.util`)."""

from manta.util import scheduling_strategies

__all__ = ["scheduling_strategies"]
