"""Who may send what: the role each service asks of each message it handles.

Each service (the head, a node agent, a driver's or worker's runtime)
checks the table here first, by the message's type, before it looks at
the message: a principal whose role is below the one named is refused,
and a type a table does not name needs the cluster's own role, so a new
message is closed until someone decides who may send it. Checks that
depend on the target (its namespace, its job, the node a report is about)
follow in the service, with `namespace_refusal` and `node_refusal`.

Costs one dict lookup per message; its share of a task's time is not measured yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from manta._private.protocol import auth_messages as am
from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol import metrics_messages as mm
from manta._private.protocol import state_messages as sm
from manta._private.protocol import tool_messages as tm
from manta._private.protocol.identity import Principal, Role

VIEW, SUBMIT, ADMIN, CLUSTER = Role.VIEW, Role.SUBMIT, Role.ADMIN, Role.CLUSTER

HEAD: dict[type, Role] = {
    m.TaskEvents: VIEW,  # a job's own processes report their tasks
    m.ListTasks: VIEW,
    m.GetFunction: VIEW,
    m.WaitActor: VIEW,
    m.GetNamedActor: VIEW,
    m.GetClusterInfo: VIEW,
    m.WaitPlacementGroup: VIEW,
    m.KvGet: VIEW,
    m.KvList: VIEW,
    m.ListActors: VIEW,
    m.GetPlacementGroups: VIEW,
    m.RegisterDriver: VIEW,
    am.Rebind: VIEW,  # a spare worker taking its job's pass (checked in `head.access`)
    sm.ListWorkers: VIEW,
    sm.ListObjects: VIEW,
    sm.ListRuntimeEnvs: VIEW,
    sm.ListJobs: VIEW,
    sm.JobDetails: VIEW,
    # Whose logs and stacks: checked in head/tools.py against the job of each.
    tm.ListLogs: VIEW,
    tm.ReadLog: VIEW,
    tm.DumpStacks: VIEW,
    tm.ListStore: VIEW,
    # A remote driver's session; what it then asks, its proxy does with the client's own token.
    cm.ClientConnect: VIEW,
    cm.ClientCall: VIEW,
    cm.ProxyAttach: VIEW,  # checked by the key only the proxy was given
    cm.ClientLog: VIEW,  # from a proxy's attached connection only (head.clients)
    mm.MetricsReport: VIEW,  # a job's processes report their application metrics (head/app_metrics.py)
    m.PutFunction: SUBMIT,
    m.CreateActor: SUBMIT,
    m.KillActor: SUBMIT,
    m.ActorExiting: SUBMIT,
    m.ReleaseActor: SUBMIT,
    m.CreatePlacementGroup: SUBMIT,
    m.RemovePlacementGroup: SUBMIT,
    m.KvPut: SUBMIT,
    m.KvDel: SUBMIT,
    m.ShutdownCluster: ADMIN,
    am.CreateToken: ADMIN,
    am.ListTokens: ADMIN,
    am.RevokeToken: ADMIN,
    m.RegisterNode: CLUSTER,
    am.IssueCert: CLUSTER,  # a node's certificate: nodes only, never a job or a person
    m.NodeResources: CLUSTER,
    m.WorkerExited: CLUSTER,
}

AGENT: dict[type, Role] = {
    m.RegisterClient: VIEW,
    m.GetResources: VIEW,
    m.StoreCreate: VIEW,  # a view-only driver may still put() what it reads into the store
    m.StoreSeal: VIEW,
    m.StorePin: VIEW,
    m.StorePull: VIEW,
    m.StoreUnpin: VIEW,
    m.StoreFree: VIEW,
    m.WorkerBlocked: VIEW,
    m.WorkerUnblocked: VIEW,
    sm.RuntimeEnvSetUp: VIEW,
    sm.ListWorkers: VIEW,
    sm.ListObjects: VIEW,
    sm.ListRuntimeEnvs: VIEW,
    m.RequestLease: SUBMIT,
    m.ReturnLease: SUBMIT,
    m.StoreReadChunk: CLUSTER,
    mm.GetNodeStats: CLUSTER,  # the head's /metrics
    m.PrepareBundles: CLUSTER,
    m.CommitBundles: CLUSTER,
    m.CancelBundles: CLUSTER,
    m.NodeDied: CLUSTER,
    m.ClusterView: CLUSTER,
    m.KillWorker: CLUSTER,
    m.ShutdownCluster: CLUSTER,
}

RUNTIME: dict[type, Role] = {
    m.GetObject: VIEW,
    m.AddBorrow: VIEW,
    m.RemoveBorrow: VIEW,
    m.GeneratorConsumed: VIEW,
    m.PushTask: SUBMIT,
    m.CancelTask: SUBMIT,
    m.LogLines: SUBMIT,
    m.GeneratorItem: SUBMIT,
    am.AssumeJob: CLUSTER,
    m.NodeDied: CLUSTER,
    m.LeaseKilled: CLUSTER,
    m.ReclaimLease: CLUSTER,
    sm.GetReferences: CLUSTER,
}


def refusal(table: dict[type, Role], principal: Principal, msg: object) -> str:
    """Why `principal` may not send `msg` here ("" if it may)."""
    need = table.get(type(msg), CLUSTER)
    if principal.role >= need:
        return ""
    return (
        f"{principal.describe()} may not {verb(type(msg).__name__)}: that needs the "
        f"{need.name.lower()} role"
    )


class Refusals:
    """How a service answers what it refuses: a request gets an `AuthorizationError`
    reply saying why; the log says so at most once per interval per principal, so
    a peer sending refused messages in a loop cannot flood it. `note` is that
    limit for any other repeated warning (failed handshakes, dropped connections)."""

    EVERY_S = 10.0
    # Keys remembered at most; past it the quiet ones are forgotten.
    KEYS = 4096

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self._logged: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def note(self, key: str, text: str, *args: Any) -> bool:
        """Logs `text % args` as a warning unless `key` was logged within EVERY_S;
        the next line logged for `key` says how many were held back meanwhile."""
        now = self.clock()
        if now - self._logged.get(key, -self.EVERY_S) < self.EVERY_S:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._logged) > self.KEYS:
            self._logged.clear()
            self._held.clear()
        self._logged[key] = now
        held = self._held.pop(key, 0)
        if held:
            self.log.warning(text + " (and %d more like it in the last %g s)", *args, held, self.EVERY_S)
        else:
            self.log.warning(text, *args)
        return True

    def answer(self, conn: Any, msg: Any, why: str, kind: m.ErrorKind = m.ErrorKind.AUTHORIZATION) -> None:
        who = conn.principal.name
        self.note(who, "refused %s from %s: %s", type(msg).__name__, who, why)
        if getattr(msg, "rid", 0):
            conn.reply_error(msg, kind, why)


def namespace_refusal(principal: Principal, namespace: str, what: str) -> str:
    if principal.in_namespace(namespace):
        return ""
    allowed = ", ".join(repr(n) for n in principal.namespaces)
    return f"{principal.describe()} may not {what} in namespace {namespace!r} (it may act in {allowed})"


def node_refusal(principal: Principal, node_id: bytes) -> str:
    """A node may speak only for itself."""
    if principal.node_id == node_id:
        return ""
    return f"{principal.describe()} may not report for node {node_id.hex()[:12]}"


def verb(name: str) -> str:
    """'KillActor' -> 'kill actor': a message type as the action it asks for."""
    out: list[str] = []
    for ch in name:
        if ch.isupper() and out:
            out.append(" ")
        out.append(ch.lower())
    return "".join(out)
