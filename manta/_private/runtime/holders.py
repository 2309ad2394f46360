"""Who may read an owner's objects, or end a borrow of one: the owner's decisions.

An object id is no secret (ids follow a per-process prefix and a counter,
and the state API lists them), so knowing one proves nothing. What does
is a capability: the owner signs each id it hands out with a key only it
holds (`cap = BLAKE2b(key, id)`), the signature travels with the ref
wherever it is passed (pickled inside a value, as a task argument, in a
return, to another job's actor), and a process that asks the owner for
the object presents it. So "a process the ref was passed to" is exactly
"a process that can show the cap", however many hops the ref took, and
the owner keeps no list of who it handed what.

The owner's own job and the cluster (agents, the head) are trusted without
a cap: they share the owner's fate, and same-job traffic, by far the most
common, costs nothing. Another job ends only the borrows it registered,
so it cannot drop a borrow to have an object freed. (A borrow that one
job registers on behalf of another's process, as an actor does for its
caller's returned refs, is then ended when that process dies.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from manta._private.protocol.identity import Principal, Role

CAP_SIZE = 16


class Holders:
    def __init__(self, job_id: Callable[[], int], key: bytes | None = None) -> None:
        # A spare worker learns its job after it starts, hence a callable.
        self._job_id = job_id
        self._key = key if key is not None else os.urandom(32)
        # (object, borrower address) -> the other job that registered that borrow.
        self.borrows: dict[tuple[bytes, str], int] = {}

    def cap(self, object_id: bytes) -> bytes:
        return hashlib.blake2b(object_id, key=self._key, digest_size=CAP_SIZE).digest()

    @property
    def job_id(self) -> int:
        return self._job_id()

    def trusted(self, p: Principal) -> bool:
        if p.role is Role.CLUSTER:
            return True
        job = self._job_id()
        return bool(job) and p.job_id == job

    def read_refusal(self, p: Principal, object_id: bytes, cap: bytes) -> str:
        """Why `p` may not read (or borrow) `object_id` ("" if it may)."""
        if self.trusted(p) or hmac.compare_digest(self.cap(object_id), cap):
            return ""
        return (f"{p.describe()} may not read object {object_id.hex()}: it was not handed a reference to it "
                f"by job {self.job_id}")

    def borrow_refusal(self, p: Principal, object_ids: list[bytes], caps: list[bytes], borrower: str) -> str:
        """Why `p` may not register `borrower` for these objects ("" if it may)."""
        if self.trusted(p):
            return ""
        if len(caps) != len(object_ids):
            return f"{p.describe()} may not borrow objects without showing it holds them"
        for oid, cap in zip(object_ids, caps):
            why = self.read_refusal(p, oid, cap)
            if why:
                return why
        if len(self.borrows) > 65536:  # bounded; a forgotten one is ended by the borrower's death
            self.borrows.clear()
        for oid in object_ids:
            self.borrows.setdefault((oid, borrower), p.job_id)
        return ""

    def unborrow_refusal(self, p: Principal, object_ids: list[bytes], borrower: str) -> str:
        """Why `p` may not end these borrows: another job ends only the ones it registered."""
        if self.trusted(p):
            return ""
        for oid in object_ids:
            if self.borrows.get((oid, borrower)) != p.job_id:
                return f"{p.describe()} may not end a borrow of object {oid.hex()} that it did not register"
        for oid in object_ids:
            self.borrows.pop((oid, borrower), None)
        return ""
