"""Quotas, decided without I/O: what a job or a token holds, and whether a
request would take it past its limit.

A token's quota (`manta token create --max-actors ...`) bounds what all the
jobs started with that token hold together, so starting more jobs does not
get round it; `Config.job_max_*` bounds each job of anyone, the cluster's
owner included. What is counted is counted where it passes, never from what
a job reports of itself, so a job cannot under-report:

- actors, CPUs and KV bytes by the head (head/quotas.py): every actor,
  placement group and KV write passes through it;
- store bytes and queued lease requests by each node agent, for its node
  (node/quotas.py), from the quota signed into the job's pass;
- pending tasks by each process that submits them (runtime/submission.py),
  where they wait; the agents' bound on queued lease requests is what
  holds a job that skips that check.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from manta._private.protocol.identity import Principal, Quota


@dataclass
class Use:
    actors: int = 0
    cpus: float = 0.0
    kv_bytes: int = 0
    pending_tasks: int = 0
    store_bytes: int = 0


def pending_limit(p: Principal | None) -> int | None:
    """The most tasks a process of `p`'s job may have pending: the lower of
    its job's and its token's max_pending_tasks (None: no limit)."""
    if p is None:
        return None
    limits = [q.max_pending_tasks for q in (p.quota, p.token_quota) if q is not None]
    return min((n for n in limits if n is not None), default=None)


def over(quota: Quota, use: Use, ask: Use, whose: str) -> str:
    """Why `ask` on top of `use` would pass `quota` ("" if it would not).

    Only what grows is checked: a request that holds no more of a thing
    (a KV write no larger than the value it replaces) passes even where the
    use is already over, say after a quota was lowered."""
    checks = (
        ("max_actors", quota.max_actors, use.actors, ask.actors, "live actors"),
        ("max_cpus", quota.max_cpus, use.cpus, ask.cpus, "CPUs held by actors and placement groups"),
        ("max_kv_bytes", quota.max_kv_bytes, use.kv_bytes, ask.kv_bytes, "bytes in the KV store"),
        ("max_pending_tasks", quota.max_pending_tasks, use.pending_tasks, ask.pending_tasks, "pending tasks"),
        ("max_store_bytes", quota.max_store_bytes, use.store_bytes, ask.store_bytes,
         "bytes in this node's object store"),
    )
    for name, limit, held, more, what in checks:
        if limit is not None and more > 0 and held + more > limit:
            return (f"{whose} would pass its quota {name}={_n(limit)}: it holds {_n(held)} {what}, "
                    f"and this asks for {_n(more)} more")
    return ""


def _n(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)  # bytes in full, not as 3.1e+07


class Ledger:
    """Who holds each entry (a KV key, a stored object) that is still there,
    and how many bytes each job and token holds so: a later write to a key
    moves its bytes to the new writer, a delete frees them from whoever
    wrote them."""

    def __init__(self) -> None:
        self.writer: dict[Hashable, tuple[int, str, int]] = {}  # key -> (job, token, bytes)
        self.by_job: dict[int, int] = {}
        self.by_token: dict[str, int] = {}

    def held(self, key: Hashable, job: int, token: str) -> tuple[int, int]:
        """The bytes of `key` already charged to `job` and to `token`."""
        w = self.writer.get(key)
        if w is None:
            return 0, 0
        return (w[2] if w[0] == job else 0), (w[2] if token and w[1] == token else 0)

    def put(self, key: Hashable, job: int, token: str, size: int) -> None:
        self.delete(key)
        self.writer[key] = (job, token, size)
        self.by_job[job] = self.by_job.get(job, 0) + size
        if token:
            self.by_token[token] = self.by_token.get(token, 0) + size

    def delete(self, key: Hashable) -> None:
        w = self.writer.pop(key, None)
        if w is None:
            return
        job, token, size = w
        _release(self.by_job, job, size)
        if token:
            _release(self.by_token, token, size)


def _release(table: dict, key: object, size: int) -> None:
    left = table[key] - size
    if left:
        table[key] = left
    else:
        del table[key]
