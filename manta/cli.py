"""The `manta` command: start, join, stop and inspect clusters.

    manta start --head [--port P] [--host H] [--num-cpus N] ...   a new cluster
    manta start --address HOST:PORT [--token-file F] ...          join a cluster
    manta stop [--address HOST:PORT]                              this machine's nodes
    manta status [--address HOST:PORT]                            nodes and resources
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

DEFAULT_PORT = 6380


def _resources(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"manta: --resources must be a JSON object, e.g. '{{\"gpu_x\": 2}}': {e}") from None
    if not isinstance(value, dict):
        raise SystemExit("manta: --resources must be a JSON object, e.g. '{\"gpu_x\": 2}'")
    return value


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument("--num-gpus", type=float, default=None)
    p.add_argument("--resources", default=None, help="custom resources as JSON")
    p.add_argument("--object-store-memory", type=int, default=None, help="bytes")
    p.add_argument("--token-file", default=None, help="file holding the cluster token")


def cmd_start(args: argparse.Namespace) -> int:
    from manta._private import cluster

    if args.head == bool(args.address):
        print("manta: give exactly one of --head or --address HOST:PORT", file=sys.stderr)
        return 2
    try:
        token = cluster.token_from_env_or_file(args.token_file)
        common: dict[str, Any] = dict(
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            resources=_resources(args.resources),
            object_store_memory=args.object_store_memory,
        )
        if args.head:
            rec = cluster.start_head(host=args.host, port=args.port, token=token, **common)
            print(f"manta head started at {rec.public_address}")
            print(f"  token file: {rec.token_file}  (mode 0600; other nodes need this token)")
            print(f"  join a node:      manta start --address {rec.public_address} --token-file <copy of the token file>")
            print(f"  connect a driver: manta.init(address=\"{rec.public_address}\")  (or address=\"auto\" here)")
        else:
            if token is None:
                print(
                    "manta: joining a cluster needs its token: pass --token-file or set MANTA_TOKEN",
                    file=sys.stderr,
                )
                return 2
            rec = cluster.join(args.address, token=token, host=args.host, **common)
            print(f"manta node joined the cluster at {rec.public_address}")
    except cluster.ClusterError as e:
        print(f"manta: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"manta: {e}", file=sys.stderr)
        return 2
    if args.block:
        return _block(rec)
    return 0


def _block(rec: Any) -> int:
    from manta._private import cluster

    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop and rec.alive():
        time.sleep(0.2)
    cluster._stop_record(rec)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from manta._private import cluster

    try:
        stopped = cluster.stop(args.address)
    except cluster.ClusterError as e:
        print(f"manta: {e}", file=sys.stderr)
        return 1
    if not stopped:
        print("manta: no manta node of that cluster runs on this machine" if args.address
              else "manta: no manta node runs on this machine")
        return 0
    for rec in stopped:
        print(f"stopped the {rec.role} of the cluster at {rec.public_address} ({len(rec.pids)} processes)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from manta._private import cluster
    from manta._private.protocol import messages as m
    from manta._private.transport.connection import ConnectionLost, connect

    try:
        rec = cluster.find_local_node(args.address)
        token = cluster.token_from_env_or_file(rec.token_file)
        assert token is not None
    except cluster.ClusterError as e:
        print(f"manta: {e}", file=sys.stderr)
        return 1

    async def query() -> Any:
        conn = await connect(rec.head_address, token, lambda c, msg: None, timeout=5)
        try:
            return await conn.request(m.GetClusterInfo(rid=0))
        finally:
            conn.close()

    try:
        info = asyncio.run(query())
    except (OSError, ConnectionLost) as e:
        print(f"manta: cannot reach the head at {rec.public_address}: {e}", file=sys.stderr)
        return 1
    print(f"cluster at {rec.public_address}")
    total: dict[str, float] = {}
    avail: dict[str, float] = {}
    print(f"{'node':34} {'state':6} {'address':40} resources")
    for n in info.nodes:
        state = "alive" if n.alive else "dead"
        shown = {k: v for k, v in n.resources.items() if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
        print(f"{n.node_id.hex():34} {state:6} {n.address:40} {_fmt(shown)}")
        if n.alive:
            for k, v in n.resources.items():
                total[k] = total.get(k, 0.0) + v
            for k, v in n.available.items():
                avail[k] = avail.get(k, 0.0) + v
    demands: dict[tuple[tuple[str, float], ...], int] = {}
    for n in info.nodes:
        if n.alive:
            for shape, count in n.pending:
                key = tuple(sorted(shape.items()))
                demands[key] = demands.get(key, 0) + count
    print("resources (used / total):")
    for k in sorted(total):
        if k.startswith("node:"):
            continue
        used = total[k] - avail.get(k, 0.0)
        if k in ("memory", "object_store_memory"):
            print(f"  {k}: {used / 2**30:.2f} / {total[k] / 2**30:.2f} GiB")
        else:
            print(f"  {k}: {used:g} / {total[k]:g}")
    print("pending demands:")
    if not demands:
        print("  (none)")
    for key, count in sorted(demands.items(), key=lambda kv: -kv[1]):
        shape = dict(key)
        feasible = any(
            all(n.resources.get(k, 0.0) >= v for k, v in shape.items()) for n in info.nodes if n.alive
        )
        why = "" if feasible else "  <- no node has these resources: waits for a node that does"
        print(f"  {_fmt(shape)}: {count} waiting{why}")
    return 0


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(res.items())) or "-"


def main(argv: list[str] | None = None) -> int:
    import manta

    parser = argparse.ArgumentParser(prog="manta", description="manta: Ray Core's API, lighter")
    parser.add_argument("--version", action="version", version=f"manta {manta.__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("start", help="start a head node, or join a node to a cluster")
    p.add_argument("--head", action="store_true", help="start a new cluster's head node here")
    p.add_argument("--address", default=None, help="HOST:PORT of the head to join")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="head port (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--block", action="store_true", help="stay in the foreground; Ctrl-C stops the node")
    _add_node_flags(p)
    p.set_defaults(fn=cmd_start)

    p = sub.add_parser("stop", help="stop this machine's manta nodes (of one cluster with --address)")
    p.add_argument("--address", default=None)
    p.set_defaults(fn=cmd_stop)

    p = sub.add_parser("status", help="nodes and resources of a cluster")
    p.add_argument("--address", default=os.environ.get("MANTA_ADDRESS"))
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(fn=lambda a: print(manta.__version__) or 0)

    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
