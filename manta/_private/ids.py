"""Binary ids shown as hex: actor, placement group, job, node and task ids."""

from __future__ import annotations


class BinaryID:
    __slots__ = ("_id",)

    def __init__(self, b: bytes) -> None:
        self._id = b

    def hex(self) -> str:
        return self._id.hex()

    def binary(self) -> bytes:
        return self._id

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._id == self._id  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id.hex()})"


class ActorID(BinaryID):
    __slots__ = ()


class PlacementGroupID(BinaryID):
    __slots__ = ()
