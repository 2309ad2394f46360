"""Ids: how they are laid out, made and shown.

    task id     16 bytes: a random 8-byte prefix per process, then an 8-byte
                little-endian counter
    object id   20 bytes: the task id that made it, then a 4-byte
                little-endian index: 1..N for a task's returns, 0 for an
                object with no task (put, a placement group's ready ref);
                a generator task's 1 is its end, its items are 2, 3, ...
    actor id    a task id (the actor's own, not its creation task's)
    job id      an int, shown as 4 little-endian bytes in hex (as Ray does)
    node, worker id   16 random bytes; placement group id  18 random bytes
    function id 32 bytes: the BLAKE2b hash of the pickled function or class,
                so a blob can be checked against the id it is stored and
                loaded under (the head on store, a worker on load)
"""

from __future__ import annotations

import hashlib
import itertools
import os

TASK_ID_SIZE = 16
INDEX_SIZE = 4
_COUNTER_SIZE = TASK_ID_SIZE // 2
# Most tasks return one value: its index, encoded once.
_FIRST_INDEX = (1).to_bytes(INDEX_SIZE, "little")


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


class TaskIds:
    """This process's task ids: unique across the cluster without asking anyone."""

    __slots__ = ("_prefix", "_counter")

    def __init__(self) -> None:
        self._prefix = os.urandom(TASK_ID_SIZE // 2)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(_COUNTER_SIZE, "little")


def object_id(task_id: bytes, index: int) -> bytes:
    return task_id + index.to_bytes(INDEX_SIZE, "little")


def return_ids(task_id: bytes, n: int) -> list[bytes]:
    """The ids of a task's `n` return values."""
    if n == 1:
        return [task_id + _FIRST_INDEX]
    return [task_id + i.to_bytes(INDEX_SIZE, "little") for i in range(1, n + 1)]


def item_id(task_id: bytes, index: int) -> bytes:
    """The object id of item `index` (from 0) of a generator task."""
    return task_id + (index + 2).to_bytes(INDEX_SIZE, "little")


def task_of(object_id: bytes) -> bytes:
    return object_id[:TASK_ID_SIZE]


def job_hex(job_id: int) -> str:
    return job_id.to_bytes(4, "little").hex()


def new_node_id() -> bytes:
    return os.urandom(16)


def new_worker_id() -> bytes:
    return os.urandom(16)


def new_placement_group_id() -> bytes:
    return os.urandom(18)


def new_token() -> bytes:
    """A cluster token: 32 random bytes."""
    return os.urandom(32)


# Domain-separated, so a function id is never the hash of anything else manta hashes.
_FUNCTION_PERSON = b"manta-function"


def function_id(blob: bytes) -> bytes:
    """The id a pickled function or class is stored under: its content hash
    (256 bits, so no one can make two blobs with one id)."""
    return hashlib.blake2b(blob, digest_size=32, person=_FUNCTION_PERSON).digest()


def function_mismatch(fn_id: bytes, blob: bytes) -> str:
    """Why `blob` may not be stored or loaded as function `fn_id` ("" if it may)."""
    if function_id(blob) == fn_id:
        return ""
    return (f"function id {fn_id.hex()[:16]}... is not the hash of the {len(blob)}-byte blob sent with it: "
            f"a function is stored and loaded only under its own content hash")
