"""The head's side of quotas: the jobs and token a request is charged to,
and what they hold now (auth/quotas.py decides).

Actors, placement groups and KV writes all go through the head, so this is
the one place their use is counted. Use is read from the head's own tables
when a request is checked, and only for a principal that has a limit, so a
cluster without quotas pays nothing, and no release can be missed (an actor
that died holds nothing, whatever path its death took). KV bytes are
charged as they are written, in a ledger; entries restored after a head
restart were written before it and are charged to no one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from manta._private.auth.credentials import LOCAL_ADMIN
from manta._private.auth.quotas import Ledger, Use, over
from manta._private.control.actors import DEAD
from manta._private.control.placement_groups import REMOVED
from manta._private.protocol import messages as m
from manta._private.protocol.auth_messages import Quota
from manta._private.protocol.identity import Principal

if TYPE_CHECKING:
    from manta._private.head.head import Head


class HeadQuotas:
    def __init__(self, head: Head) -> None:
        self.head = head
        c = head.config
        self.per_job = Quota(
            max_actors=c.job_max_actors, max_cpus=c.job_max_cpus, max_kv_bytes=c.job_max_kv_bytes,
            max_pending_tasks=c.job_max_pending_tasks, max_store_bytes=c.job_max_store_bytes,
        )
        self.kv = Ledger()

    def refusal(self, p: Principal, msg: Any) -> str:
        """Why `msg` would take its job or token past a quota ("" if it would not)."""
        t = type(msg)
        if t not in (m.CreateActor, m.CreatePlacementGroup, m.KvPut):
            return ""
        token = self.token_quota(p)
        if not self.per_job.limits() and token is None:
            return ""
        if t is m.CreateActor:
            spec = msg.spec
            if spec.actor_id in self.head.actors:
                return ""  # sent again after a head restart
            job, ask_job = spec.job_id, Use(actors=1, cpus=spec.creation.resources.get("CPU", 0.0))
            ask_token = ask_job
        elif t is m.CreatePlacementGroup:
            if msg.spec.pg_id in self.head.pgs:
                return ""
            job = msg.spec.job_id
            ask_job = ask_token = Use(cpus=sum(b.get("CPU", 0.0) for b in msg.spec.bundles))
        else:
            key = (msg.namespace, msg.key)
            old = self.head.kv.get(key)
            if old is not None and not msg.overwrite:
                return ""  # nothing is written
            job, size = p.job_id, len(msg.key) + len(msg.value)
            held_job, held_token = self.kv.held(key, job, p.token_id)
            ask_job, ask_token = Use(kv_bytes=size - held_job), Use(kv_bytes=size - held_token)
        if self.per_job.limits():
            why = over(self.per_job, self._use({job}, self.kv.by_job.get(job, 0)), ask_job, f"job {job}")
            if why:
                return why
        if token is not None:
            jobs = {j.job_id for j in self.head.jobs.values() if j.token_id == p.token_id}
            jobs.add(job)
            return over(token, self._use(jobs, self.kv.by_token.get(p.token_id, 0)), ask_token,
                        f"token {p.token_id}")
        return ""

    def kv_written(self, p: Principal, namespace: str, key: bytes, value: bytes) -> None:
        self.kv.put((namespace, key), p.job_id, p.token_id, len(key) + len(value))

    def kv_deleted(self, namespace: str, key: bytes) -> None:
        self.kv.delete((namespace, key))

    def token_quota(self, p: Principal) -> Quota | None:
        """The quota of the token `p` acts with, if it sets any limit."""
        if not p.token_id or p.token_id == LOCAL_ADMIN:
            return None
        info = self.head.access.tokens.tokens.get(p.token_id)
        return info.quota if info is not None and info.quota.limits() else None

    def _use(self, jobs: set[int], kv_bytes: int) -> Use:
        use = Use(kv_bytes=kv_bytes)
        for e in self.head.actors.values():
            if e.spec.job_id in jobs and e.state != DEAD:
                use.actors += 1
                use.cpus += e.spec.creation.resources.get("CPU", 0.0)
        for pg in self.head.pgs.values():
            if pg.spec.job_id in jobs and pg.state is not REMOVED:
                use.cpus += sum(b.get("CPU", 0.0) for b in pg.spec.bundles)
        return use
