"""What a node agent lets each peer do (see `auth.policy` for the roles).

Beyond the role each message needs: a job's process asks for leases and
registers only as itself (its job, its worker id, and its own pid, which
the kernel vouches for: the agent later signals that pid), and a worker
reports its blocked and unblocked times only for itself.
"""

from __future__ import annotations

import logging
from typing import Any

from manta._private.auth import policy
from manta._private.protocol import checks
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.transport import peercred
from manta._private.transport.connection import Connection

log = logging.getLogger(__name__)



def refusal(p: Principal, msg: Any) -> str:
    why = policy.refusal(policy.AGENT, p, msg)
    if why or p.kind is not Kind.JOB:
        return why
    t = type(msg)
    if t is m.RequestLease:
        if p.job_id and msg.job_id != p.job_id:
            return f"{p.describe()} may not ask for leases for job {msg.job_id}"
    elif t is m.RegisterClient:
        if p.worker_id and msg.worker_id != p.worker_id:
            return f"{p.describe()} may not register as process {msg.worker_id.hex()[:12]}"
        if p.job_id and msg.kind is m.ClientKind.DRIVER and msg.job_id != p.job_id:
            return f"{p.describe()} may not register as the driver of job {msg.job_id}"
    elif t in (m.WorkerBlocked, m.WorkerUnblocked):
        if p.worker_id and msg.worker_id != p.worker_id:
            return f"{p.describe()} may not report for worker {msg.worker_id.hex()[:12]}"
    return ""


def may_return(conn: Connection, owner: Connection) -> bool:
    """Whether `conn` may give back (or kill the worker of) a lease granted to `owner`:
    its own, or its job's, or the cluster's say."""
    p = conn.principal
    return conn is owner or p.role is Role.CLUSTER or (p.kind is Kind.JOB and p.job_id != 0
                                                      and p.job_id == owner.principal.job_id)


def refused(refusals: policy.Refusals, conn: Connection, msg: Any) -> bool:
    """Refuses `msg` if its sender may not send it (answering a request with why)."""
    why = refusal(conn.principal, msg)
    if why:
        refusals.answer(conn, msg, why)
        return True
    bad = checks.problem(msg)  # a hostile peer's inf or negative resources: refused, nothing changes
    if bad:
        refusals.answer(conn, msg, bad, m.ErrorKind.VALUE)
        return True
    return False


def pid_refusal(conn: Connection, msg: m.RegisterClient, forked_pid: int | None) -> str:
    """Why `msg`'s claimed pid is not its sender's ("" if it is). Only a process
    on this node's Unix socket may register, and only as the pid that
    connected it; a worker also only as the pid its fork server reported."""
    if not peercred.is_unix(conn.transport):
        return "a process registers with its node's agent only over the node's Unix socket"
    cred = peercred.peer_cred(conn.transport)
    if cred is not None and cred.pid != msg.pid:
        return f"a process may register only as itself: it claimed pid {msg.pid}, but pid {cred.pid} connected"
    if forked_pid is not None and forked_pid != msg.pid:
        return f"worker {msg.worker_id.hex()[:12]} is pid {forked_pid}, not {msg.pid}"
    return ""
