"""The `manta` command: start, join, stop and inspect clusters.

    manta start --head [--port P] [--host H] [--num-cpus N] ...   a new cluster
    manta start --address HOST:PORT [--token-file F] ...          join a cluster
    manta stop [--address HOST:PORT]                              this machine's nodes
    manta status [--address HOST:PORT] [--watch]                  nodes and resources
    manta logs|stack|memory|timeline ...                          observability (cli_tools.py)
    manta list|get|summary RESOURCE ...                           the state API (Ray's ray list/get/summary)
    manta job submit|status|logs|stop|list|delete ...             jobs over the REST API (Ray's ray job)
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import click

from manta.cli_support import _cell, _console, _fail, _head_session

DEFAULT_PORT = 6380


def _resources(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        _fail(f"--resources must be a JSON object, e.g. '{{\"gpu_x\": 2}}': {e}", 2)
    if not isinstance(value, dict):
        _fail("--resources must be a JSON object, e.g. '{\"gpu_x\": 2}'", 2)
    return value  # type: ignore[no-any-return]


def _labels(text: str | None) -> dict[str, str]:
    """Ray's --labels: key=value pairs separated by commas, or a JSON object."""
    from manta._private.options import check_label_selector

    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            labels = json.loads(text)
        except ValueError as e:
            _fail(f"--labels must be key=value,... or a JSON object: {e}", 2)
    else:
        labels = {}
        for pair in text.split(","):
            key, sep, value = pair.partition("=")
            if not sep:
                _fail(f"--labels: {pair!r} is not key=value", 2)
            labels[key.strip()] = value.strip()
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        _fail("--labels must map names to string values", 2)
    try:
        check_label_selector(labels)  # the same rules for keys and values
    except (TypeError, ValueError) as e:
        _fail(f"--labels: {e}", 2)
    return labels


def _node_config(system_config: str | None, spill_dir: str | None) -> Any:
    import os

    from manta._private.config import Config

    parsed = None
    if system_config:
        try:
            parsed = json.loads(system_config)
        except ValueError as e:
            _fail(f"--system-config must be a JSON object: {e}", 2)
    if spill_dir:
        spill_dir = os.path.abspath(spill_dir)
    return Config.build(parsed, os.environ, spill_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="manta", prog_name="manta")
def main() -> None:
    """manta: Ray Core's API on a lighter, faster, secure-by-default runtime."""


@main.command()
@click.option("--head", is_flag=True, help="Start a new cluster's head node here.")
@click.option("--address", default=None, help="HOST:PORT of the head to join.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Head port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address this node listens on.")
@click.option("--num-cpus", type=float, default=None)
@click.option("--num-gpus", type=float, default=None)
@click.option("--resources", default=None, help="Custom resources as JSON.")
@click.option("--object-store-memory", type=int, default=None, help="Store size in bytes.")
@click.option("--memory", type=int, default=None, help="Memory in bytes for tasks and actors: the node's "
              "`memory` resource (default: 70% of the machine's; give a container's limit).")
@click.option("--token-file", default=None, help="File holding the cluster token (or set MANTA_TOKEN).")
@click.option("--storage", default="", help="Head only: keep the cluster state in Redis "
              "(redis://HOST:PORT[/DB], or rediss:// for TLS), so a restarted head carries on.")
@click.option("--redis-password-file", default=None, help="Head only: file holding the Redis password "
              "(or set MANTA_REDIS_PASSWORD).")
@click.option("--redis-password", default=None, help="Ray's flag, accepted: others on this machine can read "
              "it in the command line until manta hides it; prefer --redis-password-file.")
@click.option("--redis-ca", default=None, help="Head only: CA certificates (PEM) that verify a rediss:// "
              "server (default: the system's).")
@click.option("--storage-encryption", is_flag=True, help="Head only: also encrypt what the head stores "
              "(AES-GCM); it is always authenticated.")
@click.option("--stop-keeps-state", is_flag=True, help="Head with storage: a stop (SIGTERM) keeps the stored "
              "state and the nodes for the next head, as a Kubernetes pod's restart; else a stop ends the cluster.")
@click.option("--object-spilling-directory", default=None, help="Where objects spill when the store "
              "fills (default: the node's session directory).")
@click.option("--system-config", default=None, help="Ray-style tunables as JSON, e.g. "
              "'{\"object_spilling_threshold\": 0.8, \"memory_usage_threshold\": 0.95}'.")
@click.option("--block", is_flag=True, help="Stay in the foreground; Ctrl-C stops the node.")
@click.option("--labels", default=None, help="This node's labels: key=value,key2=value2 (or a JSON object).")
@click.option("--audit-log", default=None, help="Head only: where to write the audit trail "
              "(default: audit.log in the session directory; read it with `manta audit`).")
@click.option("--worker-user", default=None, help="Run workers as this unprivileged user (the node must run "
              "as root): user code then cannot read the session's token, logs or spilled objects.")
@click.option("--pip-allow-index", "pip_allow_indexes", multiple=True, metavar="URL",
              help="Runtime_env pip installs only from these indexes (repeat; default: any; give it on every node).")
@click.option("--pip-allow-package", "pip_allow_packages", multiple=True, metavar="NAME",
              help="Runtime_env pip installs only these packages (repeat; default: any; give it on every node).")
@click.option("--tls", "tls", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="TLS 1.3 on TCP links; auto: on when a listener or the head is not on loopback.")
@click.option("--tls-ca", default=None, help="Bring your own: the CA certificate (PEM) of the cluster.")
@click.option("--tls-cert", default=None, help="Bring your own: this node's certificate (PEM), signed by --tls-ca.")
@click.option("--tls-key", default=None, help="Bring your own: this node's key (PEM).")
@click.option("--tls-ca-key", default=None, help="Head only: the key (PEM) of --tls-ca, to sign the nodes' "
              "certificates with that CA instead of a new one (which --ca-hash can then pin ahead).")
@click.option("--ca-hash", default="", help="Joining: the CA fingerprint the head printed (sha256:...), pinned.")
@click.option("--include-dashboard", default=None, help="Head only: false to serve no HTTP (dashboard, "
              "/metrics, REST).")
@click.option("--dashboard-port", type=int, default=None,
              help="Head only: port of its HTTP server: dashboard, /metrics, jobs API (default 8265, or any "
              "free port if that one is taken; 0: any free port).")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Head only: address its HTTP server listens on (0.0.0.0: every interface).")
@click.option("--min-worker-port", default=None, help="Accepted for Ray's command line (workers use Unix "
              "sockets, or a free port, here).")
@click.option("--max-worker-port", default=None, help="Accepted for Ray's command line (see --min-worker-port).")
@click.option("--client-reconnect-s", type=click.FloatRange(min=0), default=None,
              help="Head: how long a remote client's (manta://) session waits for it to reconnect before its job "
              "ends (default 30).")
def start(head: bool, address: str | None, port: int, host: str, num_cpus: float | None,
          num_gpus: float | None, resources: str | None, object_store_memory: int | None,
          token_file: str | None, storage: str, redis_password_file: str | None, redis_password: str | None,
          redis_ca: str | None, storage_encryption: bool, stop_keeps_state: bool,
          object_spilling_directory: str | None,
          system_config: str | None, block: bool, labels: str | None, audit_log: str | None,
          worker_user: str | None, pip_allow_indexes: tuple[str, ...], pip_allow_packages: tuple[str, ...],
          include_dashboard: str | None,
          dashboard_port: int | None, dashboard_host: str, min_worker_port: str | None,
          max_worker_port: str | None, tls: str, tls_ca: str | None, tls_cert: str | None,
          tls_key: str | None, ca_hash: str, memory: int | None, tls_ca_key: str | None,
          client_reconnect_s: float | None) -> None:
    """Start a head node (--head), or join this machine to a cluster (--address)."""
    from msgspec.structs import replace

    from manta._private import cluster

    if head == bool(address):
        _fail("give exactly one of --head or --address HOST:PORT", 2)
    out = _console()
    ignored = [flag for flag, value in (
        ("--min-worker-port", min_worker_port), ("--max-worker-port", max_worker_port),
    ) if value is not None]
    if ignored:
        out.print(f"manta: {', '.join(ignored)}: nothing to do here (workers need no port range)")
    serve_http = include_dashboard is None or include_dashboard.lower() not in ("false", "0", "no")
    if dashboard_port is not None and not 0 <= dashboard_port <= 65535:
        _fail(f"--dashboard-port must be 0..65535, not {dashboard_port}", 2)
    try:
        # First: Ray's --redis-password leaves this command line at once.
        password = cluster.redis_password(redis_password_file, redis_password)
        token = cluster.token_from_env_or_file(token_file)
        common: dict[str, Any] = dict(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=_resources(resources),
            object_store_memory=object_store_memory, memory=memory,
            config=replace(_node_config(system_config, object_spilling_directory), labels=_labels(labels),
                           storage_encryption=storage_encryption, stop_keeps_state=stop_keeps_state,
                           pip_allow_indexes=list(pip_allow_indexes),
                           pip_allow_packages=list(pip_allow_packages), worker_user=_worker_user(worker_user),
                           tls=tls),
        )
        head_ca = _head_ca(head, tls_ca, tls_ca_key, tls_cert, tls_key)
        if client_reconnect_s is not None:
            common["config"] = replace(common["config"], client_reconnect_s=client_reconnect_s)
        own = (tls_ca, tls_cert, tls_key)
        if not head_ca and any(own) and not all(own):
            _fail("bring your own certificates with all three of --tls-ca, --tls-cert and --tls-key", 2)
        tls_files = (tls_ca, tls_cert, tls_key) if tls_ca and tls_cert and tls_key else None
        if tls == "off" and (tls_files or head_ca or ca_hash):
            _fail("--tls off: --tls-ca/--tls-cert/--tls-key/--tls-ca-key/--ca-hash are for TLS on", 2)
        if storage and not head:
            _fail("--storage is for the head (start --head --storage redis://...)", 2)
        needs_storage = [flag for flag, value in (
            ("--redis-password-file", redis_password_file), ("--redis-ca", redis_ca),
            ("--storage-encryption", storage_encryption), ("--stop-keeps-state", stop_keeps_state),
        ) if value]
        if needs_storage and not (head and storage):
            _fail(f"{', '.join(needs_storage)}: for a head with storage (start --head --storage redis://...)", 2)
        if head:
            rec = cluster.start_head(host=host, port=port, token=token, storage=storage,
                                     redis_password=password if storage else None, redis_ca=redis_ca,
                                     audit_log=audit_log or "", tls_files=tls_files, head_ca=head_ca,
                                     dashboard=(dashboard_host, dashboard_port) if serve_http else None,
                                     **common)
            if rec.restarts:
                out.print(f"manta head restarted at {rec.public_address} in its old session "
                          f"(its node was still running); state comes back from {rec.storage}")
                if block:
                    _block(rec)
                return
            out.print(f"manta head started at {rec.public_address}")
            if rec.dashboard_url:
                out.print(f"  dashboard, /metrics and REST API at {rec.dashboard_url}  (log in with a token)")
            out.print(f"  token file: {rec.token_file}  (mode 0600; other nodes need this token)")
            out.print(f"  join a node:      manta start --address {rec.public_address} --token-file <copy of the token file>")
            out.print(f"  connect a driver: manta.init(address=\"{rec.public_address}\")  (or address=\"auto\" here)")
        else:
            if token is None:
                _fail("joining a cluster needs its token: pass --token-file or set MANTA_TOKEN", 2)
            assert address is not None and token is not None
            rec = cluster.join(address, token=token, host=host, ca_hash=ca_hash, tls_files=tls_files, **common)
            out.print(f"manta node joined the cluster at {rec.public_address}")
    except cluster.ClusterError as e:
        _fail(str(e))
    except ValueError as e:
        _fail(str(e), 2)
    if block:
        _block(rec)


def _head_ca(head: bool, ca: str | None, ca_key: str | None, cert: str | None,
             key: str | None) -> tuple[str, str] | None:
    """--tls-ca with --tls-ca-key: the head signs with the admin's CA (its own
    certificate too), so the CA, and the fingerprint nodes pin, stay the same
    across heads, as on Kubernetes where the CA is a Secret."""
    if not ca_key:
        return None
    if not head:
        _fail("--tls-ca-key is for the head (start --head --tls-ca CA.pem --tls-ca-key CA.key)", 2)
    if not ca or cert or key:
        _fail("--tls-ca-key goes with --tls-ca and without --tls-cert/--tls-key (the head makes its own)", 2)
    assert ca is not None
    return ca, ca_key


def _worker_user(name: str | None) -> str:
    """--worker-user, checked here so that a wrong one fails the command, not the node's start."""
    if not name:
        return ""
    from manta._private.node.worker_user import check_python, resolve

    check_python(resolve(name, os.geteuid()))  # ValueError: said with exit code 2
    return name


def _block(rec: Any) -> None:
    from manta._private import cluster

    stop_now = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_now
        stop_now = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop_now and rec.alive():
        time.sleep(0.2)
    cluster._stop_record(rec)


@main.command()
@click.option("--address", default=None, help="Stop only this cluster's nodes (HOST:PORT).")
def stop(address: str | None) -> None:
    """Stop this machine's manta nodes, by the PIDs they recorded (never by name)."""
    from manta._private import cluster

    refused: list[str] = []
    try:
        stopped = cluster.stop(address, refused)
    except cluster.ClusterError as e:
        _fail(str(e))
    out = _console()
    for why in refused:
        _console(stderr=True).print(f"manta: left alone, not trusted: {why}", markup=False)
    if not stopped:
        out.print("no manta node of that cluster runs on this machine" if address
                  else "no manta node runs on this machine")
    for rec in stopped:
        out.print(f"stopped the {rec.role} of the cluster at {rec.public_address} ({len(rec.pids)} processes)")


_TOKEN_FILE = click.option(
    "--token-file", default=None,
    help="File holding your token (default: MANTA_TOKEN, else this machine's cluster owner's).",
)


def _head_call(address: str | None, token_file: str | None, msg: Any) -> tuple[Any, Any]:
    """Asks this machine's cluster's head (or the one at `address`); returns (its record, the answer)."""
    return _head_session(address, token_file, lambda conn: conn.request(msg))


@main.command()
@click.option("--address", envvar="MANTA_ADDRESS", default=None, help="HOST:PORT (default: this machine's cluster).")
@click.option("--watch", "-w", is_flag=True, help="Show it again every --interval seconds until Ctrl-C.")
@click.option("--interval", "-n", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@_TOKEN_FILE
def status(address: str | None, token_file: str | None, watch: bool, interval: float) -> None:
    """Nodes, resources in use and pending demands."""
    from manta._private.protocol import messages as m

    if not watch:
        rec, info = _head_call(address, token_file, m.GetClusterInfo())
        _print_status(_console(), rec, info)
        return
    out = _console()
    try:
        while True:
            rec, info = _head_call(address, token_file, m.GetClusterInfo())
            if out.is_terminal:
                out.clear()
            out.print(f"every {interval:g} s; {time.strftime('%Y-%m-%d %H:%M:%S')} (Ctrl-C ends)")
            _print_status(out, rec, info)
            out.file.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _print_status(out: Any, rec: Any, info: Any) -> None:
    from rich.table import Table

    out.print(f"cluster at {rec.public_address}: head state {info.storage}, "
              f"{info.running_jobs} running job{'s' if info.running_jobs != 1 else ''}")
    nodes = Table("node", "state", "address", "resources", box=None, pad_edge=False)
    total: dict[str, float] = {}
    avail: dict[str, float] = {}
    demands: dict[tuple[tuple[str, float], ...], int] = {}
    for n in info.nodes:
        shown = {k: v for k, v in n.resources.items()
                 if not k.startswith("node:") and "_group_" not in k and k not in ("memory", "object_store_memory")}
        nodes.add_row(n.node_id.hex(), "alive" if n.alive else "dead", n.address, _fmt(shown))
        if not n.alive:
            continue
        for k, v in n.resources.items():
            total[k] = total.get(k, 0.0) + v
        for k, v in n.available.items():
            avail[k] = avail.get(k, 0.0) + v
        for shape, count in n.pending:
            key = tuple(sorted(shape.items()))
            demands[key] = demands.get(key, 0) + count
    out.print(nodes)
    out.print("resources (used / total):")
    for k in sorted(total):
        if k.startswith("node:") or "_group_" in k:
            continue
        used = total[k] - avail.get(k, 0.0)
        if k in ("memory", "object_store_memory"):
            out.print(f"  {k}: {used / 2**30:.2f} / {total[k] / 2**30:.2f} GiB")
        else:
            out.print(f"  {k}: {used:g} / {total[k]:g}")
    out.print("pending demands:")
    if not demands:
        out.print("  (none)")
    for key, count in sorted(demands.items(), key=lambda kv: -kv[1]):
        shape = dict(key)
        feasible = any(
            all(n.resources.get(k, 0.0) >= v for k, v in shape.items()) for n in info.nodes if n.alive
        )
        why = "" if feasible else "  <- no node has these resources: waits for a node that does"
        out.print(f"  {_fmt(shape)}: {count} waiting{why}")


# -- the state API on the command line (Ray's `ray list/get/summary`) ------------

_LISTS = {
    "actors": ("list_actors", "get_actor"),
    "tasks": ("list_tasks", "get_task"),
    "nodes": ("list_nodes", "get_node"),
    "placement-groups": ("list_placement_groups", "get_placement_group"),
    "jobs": ("list_jobs", "get_job"),
    "workers": ("list_workers", "get_worker"),
    # get_objects answers with every process's reference to the object.
    "objects": ("list_objects", "get_objects"),
    "runtime-envs": ("list_runtime_envs", None),
}


def _state_api(address: str | None) -> Any:
    """The state API, through a driver connected to the cluster."""
    import manta
    from manta.util import state

    try:
        manta.init(address=address or "auto", log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        _fail(str(e))
    return state


def _filters(given: tuple[str, ...]) -> list[tuple[str, str, str]]:
    out = []
    for f in given:
        key, op, value = f.partition("!=") if "!=" in f else f.partition("=")
        if not op or not key.strip():
            _fail(f"a filter is key=value or key!=value, got {f!r}", 2)
        out.append((key.strip(), op, value.strip()))
    return out


def _show(records: list[Any], fmt: str) -> None:
    import dataclasses
    import json

    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) and not isinstance(r, type) else dict(r)
            for r in records]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "yaml":
        # JSON values are YAML: one mapping per record, a line per field.
        for row in rows:
            for i, (k, v) in enumerate(row.items()):
                click.echo(f"{'- ' if i == 0 else '  '}{k}: {json.dumps(v, default=str)}")
    else:
        from rich.table import Table

        if not rows:
            _console().print("(none)")
            return
        columns = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))]
        table = Table(*columns, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*(_cell("" if row[c] is None else row[c]) for c in columns))
        _console().print(table)


_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table",
                       show_default=True)
_ADDRESS = click.option("--address", envvar="MANTA_ADDRESS", default=None,
                        help="HOST:PORT (default: this machine's cluster).")


@main.command(name="list")
@click.argument("resource", type=click.Choice(sorted(_LISTS)))
@click.option("--filter", "filters", multiple=True, help='key=value or key!=value, e.g. --filter "state=ALIVE".')
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--detail", is_flag=True, help="More fields, as in Ray (exit details and times of workers, "
              "jobs' times and runtime_env, runtime envs' ref counts and errors).")
@_FORMAT
@_ADDRESS
def list_(resource: str, filters: tuple[str, ...], limit: int, detail: bool, fmt: str, address: str | None) -> None:
    """List the cluster's actors, tasks, nodes, placement groups, jobs,
    workers, objects or runtime envs."""
    state = _state_api(address)
    lister = getattr(state, _LISTS[resource][0])
    try:
        records = lister(filters=_filters(filters), limit=limit, detail=detail)
    except ValueError as e:
        _fail(str(e), 2)
    _show(records, fmt)


@main.command(name="get")
@click.argument("resource", type=click.Choice(sorted(k for k, v in _LISTS.items() if v[1])))
@click.argument("id")
@_FORMAT
@_ADDRESS
def get_(resource: str, id: str, fmt: str, address: str | None) -> None:
    """One actor, task, node, placement group, job or worker by its id, or
    every process's reference to an object."""
    state = _state_api(address)
    found = getattr(state, str(_LISTS[resource][1]))(id)
    records = found if isinstance(found, list) else [] if found is None else [found]
    if not records:
        _fail(f"no {resource[:-1].replace('-', ' ')} with id {id}")
    _show(records, "yaml" if fmt == "table" else fmt)


@main.command()
@click.argument("resource", type=click.Choice(["actors", "tasks", "objects"]))
@_ADDRESS
def summary(resource: str, address: str | None) -> None:
    """Counts of tasks by function and of actors by class, by state; of
    objects (and their sizes) by call site."""
    import json

    state = _state_api(address)
    click.echo(json.dumps(getattr(state, f"summarize_{resource}")(), indent=2))


# -- people's tokens ------------------------------------------------------------


@main.group()
def token() -> None:
    """Make, list and revoke people's tokens (admin only)."""


def _duration(text: str | None) -> float:
    """'7d', '12h', '30m', '90s' or plain seconds -> seconds (None: never expires)."""
    if not text:
        return 0.0
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t[-1] in units else float(t)
    except ValueError:
        value = -1
    if value <= 0:
        _fail(f"--expires takes a positive duration such as 7d, 12h or 30m, not {text!r}", 2)
    return value


@token.command(name="create")
@click.option("--role", type=click.Choice(["admin", "submit", "view"]), required=True)
@click.option("--namespace", "namespaces", multiple=True, help="A namespace it may act in (repeat; default: all).")
@click.option("--expires", default=None, help="Lifetime, e.g. 7d, 12h, 30m (default: never).")
@click.option("--note", default="", help="Who or what it is for, shown by `manta token list`.")
@click.option("--max-actors", type=click.IntRange(min=0), default=None,
              help="Quota: live actors of all its jobs together (default: no limit).")
@click.option("--max-cpus", type=click.FloatRange(min=0), default=None,
              help="Quota: CPUs its jobs' actors and placement groups hold together.")
@click.option("--max-kv-bytes", type=click.IntRange(min=0), default=None,
              help="Quota: bytes its jobs keep in the KV store.")
@click.option("--max-pending-tasks", type=click.IntRange(min=0), default=None,
              help="Quota: tasks each of its jobs' processes may have submitted and not finished "
                   "(and lease requests its jobs may have waiting on one node).")
@click.option("--max-store-bytes", type=click.IntRange(min=0), default=None,
              help="Quota: bytes its jobs' objects may take in one node's object store.")
@_ADDRESS
@_TOKEN_FILE
def token_create(role: str, namespaces: tuple[str, ...], expires: str | None, note: str, max_actors: int | None,
                 max_cpus: float | None, max_kv_bytes: int | None, max_pending_tasks: int | None,
                 max_store_bytes: int | None, address: str | None, token_file: str | None) -> None:
    """Make a token; it is shown once, here."""
    from manta._private.protocol import auth_messages as am
    from manta._private.protocol.identity import Role

    quota = am.Quota(max_actors=max_actors, max_cpus=max_cpus, max_kv_bytes=max_kv_bytes,
                     max_pending_tasks=max_pending_tasks, max_store_bytes=max_store_bytes)
    msg = am.CreateToken(role=Role[role.upper()], namespaces=namespaces, expires_s=_duration(expires), note=note,
                         quota=quota)
    _, made = _head_call(address, token_file, msg)
    out = _console()
    out.print(f"token {made.info.token_id} ({role}"
              f"{', namespaces ' + ', '.join(namespaces) if namespaces else ', every namespace'}"
              f"{', expires ' + _when(made.info.expires) if made.info.expires else ''}); it is not shown again:")
    click.echo(made.token)


@token.command(name="list")
@_ADDRESS
@_TOKEN_FILE
def token_list(address: str | None, token_file: str | None) -> None:
    """Tokens made on this cluster (never their secrets)."""
    from rich.table import Table

    from manta._private.protocol import auth_messages as am

    _, answer = _head_call(address, token_file, am.ListTokens())
    table = Table("id", "role", "namespaces", "created", "expires", "state", "quota", "note", box=None,
                  pad_edge=False)
    for t in answer.tokens:
        q = t.quota
        quota = ", ".join(f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}" for name, v in
                          (("actors", q.max_actors), ("cpus", q.max_cpus), ("kv bytes", q.max_kv_bytes),
                           ("pending tasks", q.max_pending_tasks), ("store bytes", q.max_store_bytes))
                          if v is not None) or "none"
        table.add_row(t.token_id, t.role.name.lower(), ", ".join(t.namespaces) or "all", _when(t.created),
                      _when(t.expires) if t.expires else "never", "revoked" if t.revoked else "valid", quota,
                      _cell(t.note))
    _console().print(table)


@token.command(name="revoke")
@click.argument("token_id")
@_ADDRESS
@_TOKEN_FILE
def token_revoke(token_id: str, address: str | None, token_file: str | None) -> None:
    """Revoke a token: its holder's connections to the head end at once."""
    from manta._private.protocol import auth_messages as am

    _head_call(address, token_file, am.RevokeToken(token_id=token_id.split(".")[1] if "." in token_id else token_id))
    _console().print(f"revoked token {token_id}")


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they come.")
@click.option("--since", default=None, help="Only records newer than this: 10m, 2h, 1d, or seconds.")
@click.option("--path", default=None, help="The audit log (default: this machine's head's session audit.log).")
@click.option("--json", "as_json", is_flag=True, help="The records as they are, one JSON object per line.")
@_ADDRESS
def audit(follow: bool, since: str | None, path: str | None, as_json: bool, address: str | None) -> None:
    """The head's audit trail: logins, refusals, jobs, actors, KV writes, tokens, nodes."""
    import json
    import os
    import time

    from manta._private import cluster
    from manta._private.runtime.terminal import safe_line

    if path is None:
        try:
            rec = cluster.find_local_node(address)
        except cluster.ClusterError as e:
            _fail(str(e))
        path = os.path.join(rec.session_dir, "audit.log")
    after = time.time() - _duration(since) if since else 0.0
    try:
        f = open(path)
    except OSError as e:
        _fail(f"cannot read the audit log {path}: {e}")
    with f:
        while True:
            line = f.readline()
            if not line:
                if not follow:
                    return
                time.sleep(0.2)
                continue
            try:
                rec_ = json.loads(line)
            except ValueError:
                continue
            if rec_.get("time", 0) < after:
                continue
            if as_json:
                click.echo(line.rstrip("\n"))
                continue
            target = f" {rec_['target']}" if rec_.get("target") else ""
            ns = f" [{rec_['namespace']}]" if rec_.get("namespace") else ""
            detail = f": {rec_['detail']}" if rec_.get("detail") else ""
            text = (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rec_['time']))} {rec_['outcome']:7} "
                    f"{rec_['action']}{target}{ns} by {rec_['principal']} ({rec_['role']}) "
                    f"from {rec_['peer'] or '-'}{detail}")
            # Keys, names and causes come from users: shown, never sent to the terminal as controls.
            click.echo(" ".join(safe_line(part) for part in text.split("\n")), nl=True)


def _when(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(res.items())) or "-"


def _add_tools() -> None:
    from manta import cli_tools  # logs, stack, memory, timeline

    cli_tools.register(main)


_add_tools()


def _add_job_commands() -> None:
    from manta.job_cli import job

    main.add_command(job)


_add_job_commands()

if __name__ == "__main__":
    main()
