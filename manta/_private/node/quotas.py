"""A node agent's side of quotas: the store bytes and the queued lease
requests of each job and token on this node (auth/quotas.py decides).

Both pass through the agent, which reads the limits from the quota the
head signed into the job's pass, so it needs no round trip to the head
and the job cannot change them. Use is counted only for a job or token
that has a limit: a cluster without quotas pays one check per request.

- Store bytes are charged to the creating job when an object is created
  here, and released when the object leaves the node wholly (freed and
  unread, or its spill file deleted); an object spilled to disk still
  counts, so spilling does not get round the quota.
- Queued lease requests are what a job's pending tasks cost this node. A
  job's own processes bound the tasks they submit (runtime/submission.py);
  this bound holds a job that skips that check, so that it cannot fill the
  node's queue (Config.max_pending_demands) for everyone else.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from manta._private.auth.quotas import Ledger, Use, over
from manta._private.protocol.identity import Principal, Quota


class NodeQuotas:
    def __init__(self) -> None:
        self.store = Ledger()  # object id -> (job, token, bytes)
        # Requests queued per job and per token: ids, pruned lazily against
        # the agent's table of pending requests (no release can be missed).
        self.queued_by_job: dict[int, set[int]] = {}
        self.queued_by_token: dict[str, set[int]] = {}

    # -- store bytes ------------------------------------------------------------

    def store_refusal(self, p: Principal, size: int) -> str:
        """Why creating `size` bytes here would take `p`'s job or token past a quota."""
        job_q, token_q = _limits(p, "max_store_bytes")
        ask = Use(store_bytes=size)
        # `over` checks only what `ask` grows, so the whole quota is passed.
        if job_q is not None:
            why = over(job_q, Use(store_bytes=self.store.by_job.get(p.job_id, 0)), ask, f"job {p.job_id}")
            if why:
                return why
        if token_q is not None:
            held = Use(store_bytes=self.store.by_token.get(p.token_id, 0))
            return over(token_q, held, ask, f"token {p.token_id}")
        return ""

    def created(self, p: Principal, object_id: bytes, size: int) -> None:
        job_q, token_q = _limits(p, "max_store_bytes")
        if job_q is not None or token_q is not None:
            self.store.put(object_id, p.job_id, p.token_id if token_q is not None else "", size)

    def gone(self, object_id: bytes) -> None:
        """The object left this node: its bytes are no one's any more."""
        self.store.delete(object_id)

    # -- queued lease requests ------------------------------------------------

    def lease_refusal(self, p: Principal, queued: Container[int], parked: Iterable[Principal]) -> str:
        """Why one more request waiting here for `p`'s job would pass its quota.
        `queued` holds the ids of the requests queued for resources; `parked`
        are the jobs of those that wait for a node able to serve them at all."""
        job_q, token_q = _limits(p, "max_pending_tasks")
        if job_q is None and token_q is None:
            return ""
        parked = list(parked)
        ask = Use(pending_tasks=1)
        if job_q is not None:
            held = _live(self.queued_by_job, p.job_id, queued) + sum(j.job_id == p.job_id for j in parked)
            why = over(job_q, Use(pending_tasks=held), ask, f"job {p.job_id} (lease requests waiting on this node)")
            if why:
                return why
        if token_q is not None:
            held = _live(self.queued_by_token, p.token_id, queued) + sum(j.token_id == p.token_id for j in parked)
            return over(token_q, Use(pending_tasks=held), ask,
                        f"token {p.token_id} (lease requests waiting on this node)")
        return ""

    def lease_queued(self, p: Principal, request_id: int) -> None:
        job_q, token_q = _limits(p, "max_pending_tasks")
        if job_q is not None:
            self.queued_by_job.setdefault(p.job_id, set()).add(request_id)
        if token_q is not None:
            self.queued_by_token.setdefault(p.token_id, set()).add(request_id)


def _limits(p: Principal, field: str) -> tuple[Quota | None, Quota | None]:
    """`p`'s job quota and token quota, each only if it sets `field`."""
    def setting(q: Quota | None) -> Quota | None:
        return q if q is not None and getattr(q, field) is not None else None

    return setting(p.quota), setting(p.token_quota)


def _live(index: dict, key: object, queued: Container[int]) -> int:
    """How many of `key`'s requests are still queued, forgetting the others."""
    ids = index.get(key)
    if not ids:
        return 0
    ids.difference_update([i for i in ids if i not in queued])  # its own size, not the queue's
    if not ids:
        del index[key]
    return len(ids)
