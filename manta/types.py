"""Types Ray programs import from `ray.types`."""

from __future__ import annotations

from manta._private.runtime.object_ref import ObjectRef

__all__ = ["ObjectRef"]
