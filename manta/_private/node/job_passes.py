"""The passes of the workers on this node: each is its job's, and only its job's.

A worker started for a job's request gets a pass naming that job's
principal (its role and namespaces) when it is forked. A spare worker
(prestarted, or started for a request that went away) gets one that may do
nothing but wait: when it is first leased to a job, it is sent that job's
pass (`AssumeJob`) and the lease is granted once it answers, so nothing of
the job reaches it before it is the job's.

Where a job's principal comes from: the process that asks for a lease, when
it is the job's own (its driver or one of its workers); the head's word
(`RequestLease.job_principal`) when the head asks on the job's behalf, to
place an actor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from msgspec.structs import replace

from manta._private.auth.credentials import ClusterKeys
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Credential, Kind, Principal, Role
from manta._private.scheduling.leases import SPARE


class JobPasses:
    def __init__(self, keys: ClusterKeys, node_id: bytes) -> None:
        self.keys = keys
        self.node_id = node_id
        self.jobs: dict[int, Principal] = {}
        # Workers whose pass names a job (absent: a spare's).
        self.bound: dict[bytes, int] = {}

    def learn(self, sender: Principal, msg: m.RequestLease) -> str:
        """Notes the principal of the job a lease request is for; why it cannot, if not."""
        if msg.job_id in self.jobs:
            return ""
        if sender.kind is Kind.JOB and sender.job_id == msg.job_id and msg.job_id != SPARE:
            self.jobs[msg.job_id] = replace(sender, name=f"job {msg.job_id}", worker_id=b"", node_id=b"")
        elif sender.role is Role.CLUSTER and msg.job_principal is not None:
            self.jobs[msg.job_id] = msg.job_principal
        else:
            return f"{sender.describe()} may not ask for a lease for job {msg.job_id}"
        return ""

    def jobs_of(self, requests: Iterable[m.RequestLease]) -> Iterator[Principal]:
        """The principals of the jobs `requests` are for (those known here)."""
        for r in requests:
            job = self.jobs.get(r.job_id)
            if job is not None:
                yield job

    def credential(self, worker_id: bytes, job_id: int) -> Credential:
        """The pass a worker is forked with (a spare's, if the job is not known)."""
        job = self.jobs.get(job_id)
        if job is None:
            principal = Principal(
                kind=Kind.JOB, role=Role.VIEW, name=f"spare worker {worker_id.hex()[:8]}", node_id=self.node_id,
                worker_id=worker_id,
            )
        else:
            self.bound[worker_id] = job_id
            principal = replace(
                job, name=f"worker {worker_id.hex()[:8]} of job {job_id}", node_id=self.node_id, worker_id=worker_id
            )
        return self.keys.mint(principal)

    def needs_binding(self, worker_id: bytes, job_id: int) -> bool:
        return job_id != SPARE and self.bound.get(worker_id) != job_id and job_id in self.jobs

    def forget_worker(self, worker_id: bytes) -> None:
        self.bound.pop(worker_id, None)

    def job_ended(self, job_id: int) -> None:
        self.jobs.pop(job_id, None)
