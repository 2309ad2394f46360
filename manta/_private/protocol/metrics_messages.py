"""The messages behind the head's /metrics (docs/metrics.md).

- Each process (driver, worker) sends the head its application metrics
  (`manta.util.metrics`) whenever they changed, at most every
  `Config.metrics_report_ms`: the whole current snapshot, so a lost or
  late report is made good by the next.
- The head asks every node agent for its node's numbers (`GetNodeStats`),
  every few seconds and when /metrics is scraped: the store, spilling, CPU,
  memory, workers, queued lease requests, bytes moved between nodes.
"""

# Annotations are not postponed: see protocol/messages.py.

from manta._private.protocol.structs import Msg, Record

# --- application metrics (process -> head) -----------------------------------


class MetricPoint(Record, frozen=True):
    """One tag set's value: a counter's total or a gauge's value in `value`; a
    histogram's counts per bucket (then +Inf), count and sum."""

    tags: list[str]  # in the series' tag_keys order
    value: float = 0.0
    buckets: list[int] = []
    count: int = 0
    sum: float = 0.0


class MetricSeries(Record, frozen=True):
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    tag_keys: list[str]
    boundaries: list[float]
    points: list[MetricPoint]


class MetricsReport(Msg, frozen=True):
    """Process -> head: every metric this process recorded, as it is now."""

    worker_id: bytes
    job_id: int
    node_id: bytes
    pid: int
    series: list[MetricSeries]


# --- a node's numbers (head -> agent -> head) --------------------------------


class GetNodeStats(Msg, frozen=True):
    rid: int = 0


class NodeStats(Msg, frozen=True):
    node_id: bytes
    store_capacity: int = 0
    store_used: int = 0  # bytes in shared memory, primary copies and pulled ones
    store_objects: int = 0
    spilled_bytes: int = 0  # on disk now
    spilled_objects: int = 0
    cpu_percent: float = 0.0  # the machine's, since the previous ask
    cpu_count: int = 0
    mem_total: int = 0
    mem_used: int = 0
    mem_available: int = 0
    workers: int = 0  # worker processes alive (drivers apart)
    idle_workers: int = 0
    leased_workers: int = 0
    drivers: int = 0
    pending_leases: int = 0  # lease requests waiting for resources here
    received_bytes: int = 0  # object bytes pulled from other nodes, since the agent started
    sent_bytes: int = 0  # object bytes read by other nodes
    rid: int = 0


# Answers: a connection hands these to the request's waiter (transport/connection.py).
REPLIES = (NodeStats,)
