"""`GET /metrics` (Prometheus) and `GET /api/metrics/history` (the charts' data), role view.

/metrics is written with prometheus-client: a custom collector reads the
head's own tables (tasks, actors, placement groups, nodes' resources), the
nodes' numbers (`NodeStats`, asked of every agent when the ones held are
over a second old) and every process's application metrics
(head/app_metrics.py) at scrape time. No background thread: the one task
this module runs is the sampler on the head's loop, which fills the
history ring (history.py) every few seconds. docs/metrics.md lists the series.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from manta._private import ids
from manta._private.control.actors import ALIVE, DEAD
from manta._private.head.http import auth
from manta._private.head.http.history import History, Totals
from manta._private.protocol import metrics_messages as mm
from manta._private.protocol.identity import Role

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)

PREFIX = "manta_"
# Node numbers older than this are asked for again at a scrape.
FRESH_S = 1.0
# How long the head waits for agents' numbers; a node that does not answer is left out.
ASK_TIMEOUT_S = 2.0
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class NodeNumbers:
    """The latest `NodeStats` of every live node, asked for when stale."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.stats: dict[bytes, mm.NodeStats] = {}
        self.at = -1e9  # monotonic time of the last ask
        self._asking: asyncio.Future[None] | None = None

    async def fresh(self, max_age: float = FRESH_S) -> None:
        if time.monotonic() - self.at <= max_age:
            return
        if self._asking is None:  # scrapes at once share one round of asks
            self._asking = asyncio.ensure_future(self._ask())
        asking = self._asking
        try:
            await asyncio.shield(asking)
        finally:
            if asking.done() and self._asking is asking:
                self._asking = None

    async def _ask(self) -> None:
        nodes = [n for n in self.head.nodes.values() if n.alive and n.connected]
        answers = await asyncio.gather(
            *(asyncio.wait_for(n.request(mm.GetNodeStats()), ASK_TIMEOUT_S) for n in nodes), return_exceptions=True
        )
        stats = {}
        for n, a in zip(nodes, answers):
            if isinstance(a, mm.NodeStats):
                stats[n.node_id] = a
            elif n.node_id in self.stats:
                stats[n.node_id] = self.stats[n.node_id]  # the last known, until it answers again
        self.stats = stats
        self.at = time.monotonic()


def totals(head: Head, numbers: NodeNumbers) -> Totals:
    alive = [n for n in head.nodes.values() if n.alive]
    stats = [numbers.stats[n.node_id] for n in alive if n.node_id in numbers.stats]
    tasks = head.task_states
    tasks.dropped  # noqa: B018 (folds the records waiting, so the totals are current)
    states = [e.state for e in head.actors.values()]
    return Totals(
        nodes=len(alive),
        cpu_percent=sum(s.cpu_percent for s in stats) / len(stats) if stats else 0.0,
        cpus=sum(n.resources.get("CPU", 0.0) for n in alive),
        cpus_used=sum(max(0.0, n.resources.get("CPU", 0.0) - n.available.get("CPU", 0.0)) for n in alive),
        mem_total=sum(s.mem_total for s in stats), mem_used=sum(s.mem_used for s in stats),
        store_capacity=sum(s.store_capacity for s in stats), store_used=sum(s.store_used for s in stats),
        spilled_bytes=sum(s.spilled_bytes for s in stats),
        busy_workers=sum(s.leased_workers for s in stats),
        alive_actors=sum(1 for s in states if s is ALIVE),
        tasks_finished=tasks.finished_total, tasks_failed=tasks.failed_total,
        actors_dead=sum(1 for s in states if s is DEAD),
    )


class ClusterCollector(Collector):
    """Every series of /metrics, read from the head when scraped."""

    def __init__(self, head: Head, numbers: NodeNumbers) -> None:
        self.head = head
        self.numbers = numbers
        self._refused: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        system = list(self._system())
        yield from system
        yield from self._application({f.name for f in system})

    def _system(self) -> Iterator[Metric]:
        head = self.head
        tasks = GaugeMetricFamily(PREFIX + "tasks", "Tasks (remote functions and actor calls) by state.",
                                  labels=["State", "Name", "IsRetry"])
        for (state, name, retry), n in sorted(head.task_states.counts().items()):
            tasks.add_metric([state, name, "1" if retry else "0"], n)
        yield tasks
        ended = CounterMetricFamily(PREFIX + "tasks_ended", "Task attempts that ended, since the head started.",
                                    labels=["State"])
        ended.add_metric(["FINISHED"], head.task_states.finished_total)
        ended.add_metric(["FAILED"], head.task_states.failed_total)
        yield ended
        actors: dict[tuple[str, str], int] = {}
        for e in head.actors.values():
            key = (str(e.state), e.spec.qualname or e.spec.class_name)
            actors[key] = actors.get(key, 0) + 1
        fam = GaugeMetricFamily(PREFIX + "actors", "Actors by state.", labels=["State", "Name"])
        for (state, name), n in sorted(actors.items()):
            fam.add_metric([state, name], n)
        yield fam
        pg_counts: dict[str, int] = {}
        for pg in head.pgs.values():
            pg_counts[str(pg.state)] = pg_counts.get(str(pg.state), 0) + 1
        fam = GaugeMetricFamily(PREFIX + "placement_groups", "Placement groups by state.", labels=["State"])
        for state, n in sorted(pg_counts.items()):
            fam.add_metric([state], n)
        yield fam
        jobs = GaugeMetricFamily(PREFIX + "jobs", "Jobs (drivers) by state.", labels=["State"])
        running = sum(1 for j in head.jobs.values() if j.alive)
        jobs.add_metric(["RUNNING"], running)
        jobs.add_metric(["FINISHED"], len(head.jobs) - running)
        yield jobs
        yield from self._nodes()

    def _nodes(self) -> Iterator[Metric]:
        head = self.head
        alive = [n for n in head.nodes.values() if n.alive]
        fam = GaugeMetricFamily(PREFIX + "cluster_active_nodes", "Nodes alive.")
        fam.add_metric([], len(alive))
        yield fam
        fam = GaugeMetricFamily(PREFIX + "cluster_dead_nodes", "Nodes the head declared dead.")
        fam.add_metric([], len(head.nodes) - len(alive))
        yield fam
        res = GaugeMetricFamily(PREFIX + "resources", "Logical resources of each node, USED or AVAILABLE.",
                                labels=["Name", "State", "InstanceId", "NodeAddress"])
        demands = GaugeMetricFamily(PREFIX + "scheduler_pending_demands",
                                    "Resource demands a node reported waiting for room (lease requests).",
                                    labels=["InstanceId", "NodeAddress"])
        for n in alive:
            node, address = n.node_id.hex(), n.address
            for name, total in sorted(n.resources.items()):
                if name.startswith("node:"):
                    continue  # a node's marker, not a quantity
                free = n.available.get(name, 0.0)
                res.add_metric([name, "USED", node, address], max(0.0, total - free))
                res.add_metric([name, "AVAILABLE", node, address], free)
            demands.add_metric([node, address], sum(count for _, count in n.pending))
        yield res
        yield demands
        yield from self._node_stats({n.node_id: n.address for n in alive})

    def _node_stats(self, addresses: dict[bytes, str]) -> Iterator[Metric]:
        labels = ["InstanceId", "NodeAddress"]

        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=[*(extra or []), *labels])

        store = gauge("object_store_memory", "Object store bytes by location (MMAP_SHM: in shared memory; "
                      "SPILLED: on disk).", ["Location"])
        used = gauge("object_store_used_memory", "Object store bytes in use in shared memory.")
        available = gauge("object_store_available_memory", "Object store bytes free.")
        objects = gauge("object_store_num_local_objects", "Objects in the node's store.")
        spilled = gauge("spill_manager_objects", "Objects spilled to disk now.", ["Type"])
        spilled_bytes = gauge("spill_manager_objects_bytes", "Bytes spilled to disk now.", ["Type"])
        cpu = gauge("node_cpu_utilization", "The machine's CPU use, percent.")
        cpus = gauge("node_cpu_count", "The machine's CPUs.")
        mem_used = gauge("node_mem_used", "The machine's memory in use, bytes.")
        mem_total = gauge("node_mem_total", "The machine's memory, bytes.")
        mem_available = gauge("node_mem_available", "The machine's memory available, bytes.")
        workers = gauge("workers", "Worker processes by state (IDLE, LEASED) and drivers (DRIVER).", ["State"])
        queued = gauge("scheduler_tasks", "Lease requests waiting for resources on the node.", ["State"])
        moved = CounterMetricFamily(PREFIX + "object_manager_bytes", "Object bytes moved between nodes.",
                                    labels=["Type", *labels])
        for node_id, s in sorted(self.numbers.stats.items()):
            if node_id not in addresses:
                continue
            ls = [node_id.hex(), addresses[node_id]]
            store.add_metric(["MMAP_SHM", *ls], s.store_used)
            store.add_metric(["SPILLED", *ls], s.spilled_bytes)
            used.add_metric(ls, s.store_used)
            available.add_metric(ls, max(0, s.store_capacity - s.store_used))
            objects.add_metric(ls, s.store_objects)
            spilled.add_metric(["Spilled", *ls], s.spilled_objects)
            spilled_bytes.add_metric(["Spilled", *ls], s.spilled_bytes)
            cpu.add_metric(ls, s.cpu_percent)
            cpus.add_metric(ls, s.cpu_count)
            mem_used.add_metric(ls, s.mem_used)
            mem_total.add_metric(ls, s.mem_total)
            mem_available.add_metric(ls, s.mem_available)
            workers.add_metric(["IDLE", *ls], s.idle_workers)
            workers.add_metric(["LEASED", *ls], s.leased_workers)
            workers.add_metric(["DRIVER", *ls], s.drivers)
            queued.add_metric(["WAITING_FOR_RESOURCES", *ls], s.pending_leases)
            moved.add_metric(["Received", *ls], s.received_bytes)
            moved.add_metric(["Sent", *ls], s.sent_bytes)
        yield from (store, used, available, objects, spilled, spilled_bytes, cpu, cpus, mem_used, mem_total,
                    mem_available, workers, queued, moved)

    def _application(self, taken: set[str]) -> Iterator[Metric]:
        """`manta.util.metrics`, named `manta_<name>` as Ray names them `ray_<name>`, with a JobId label."""
        for name, merged in sorted(self.head.state_queries.app_metrics.series().items()):
            full = PREFIX + name
            bad = (full in taken or full.removesuffix("_total") in taken or "JobId" in merged.tag_keys
                   or not all(_LABEL.fullmatch(k) and not k.startswith("__") for k in merged.tag_keys))
            if bad:
                if name not in self._refused:
                    self._refused.add(name)
                    log.warning("application metric %r is left out of /metrics: its name or a tag key "
                                "clashes with manta's own series, or is not a Prometheus label", name)
                continue
            labels = [*merged.tag_keys, "JobId"]
            fam: Any
            if merged.kind == "histogram":
                fam = HistogramMetricFamily(full, merged.description, labels=labels)
                bounds = [*(repr(float(b)) for b in merged.boundaries), "+Inf"]
                for (job, tags), (counts, _count, total) in sorted(merged.histograms.items()):
                    cumulative, running = [], 0
                    for bound, c in zip(bounds, counts):
                        running += c
                        cumulative.append((bound, running))
                    fam.add_metric([*tags, ids.job_hex(job)], cumulative, total)
            elif merged.kind == "counter":
                fam = CounterMetricFamily(full, merged.description, labels=labels)
                for (job, tags), v in sorted(merged.values.items()):
                    fam.add_metric([*tags, ids.job_hex(job)], v)
            else:
                fam = GaugeMetricFamily(full, merged.description, labels=labels)
                for (job, tags), v in sorted(merged.values.items()):
                    fam.add_metric([*tags, ids.job_hex(job)], v)
            yield fam


class Sampler:
    """Fills the history ring every `history.period_s` on the head's loop."""

    def __init__(self, head: Head, numbers: NodeNumbers, history: History) -> None:
        self.head = head
        self.numbers = numbers
        self.history = history
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.history.next_at() - self.history.clock()))
            try:
                await self.numbers.fresh(max_age=self.history.period_s / 2)
                self.history.add(totals(self.head, self.numbers))
            except Exception:
                log.exception("the metrics sampler failed; it tries again next period")


NUMBERS_KEY = web.AppKey("manta.node_numbers", NodeNumbers)
REGISTRY_KEY = web.AppKey("manta.metrics_registry", CollectorRegistry)
SAMPLER_KEY = web.AppKey("manta.metrics_sampler", Sampler)


async def metrics(request: web.Request) -> web.Response:
    auth.require(request, Role.VIEW)
    await request.app[NUMBERS_KEY].fresh()
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def history(request: web.Request) -> web.Response:
    """?since=<epoch seconds>: only the samples after it."""
    auth.require(request, Role.VIEW)
    text = request.query.get("since", "0")
    try:
        since = float(text)
    except ValueError:
        raise auth.error(400, f"since must be a time in seconds since the epoch, not {text!r}") from None
    ring = request.app[SAMPLER_KEY].history
    return web.json_response({"period_s": ring.period_s, "keep_s": ring.keep_s,
                              "samples": [s.json() for s in ring.since(since)]})


def setup(app: web.Application, head: Head) -> None:
    numbers = NodeNumbers(head)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(head, numbers))
    sampler = Sampler(head, numbers, History(time.time))
    app[NUMBERS_KEY] = numbers
    app[REGISTRY_KEY] = registry
    app[SAMPLER_KEY] = sampler
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/metrics/history", history)

    async def run_sampler(app: web.Application) -> Any:
        sampler.start()
        yield
        await sampler.stop()

    app.cleanup_ctx.append(run_sampler)
