"""`ray.remote_function`: the class `@remote` makes of a function."""

from __future__ import annotations

from manta._private.remote import RemoteFunction

__all__ = ["RemoteFunction"]
