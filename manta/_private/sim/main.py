"""Entry point of a fleet of simulated nodes: `python -m manta._private.sim.main ...`.

    python -m manta._private.sim.main --head tcp:127.0.0.1:PORT --token-file FILE --nodes 500

Joins `--nodes` simulated nodes (`sim/fleet.py`) to a real head, prints one
JSON line `{"ready": ...}` (the node ids, how long joining took), then
answers commands read from stdin, one JSON line each on stdout:

    kill I      node I crashes: its connections close      {"killed": id, "at": unix time}
    silence I   node I hangs: its heartbeats stop           {"silenced": id, "at": unix time}
    stats       what the fleet did so far                   {"stats": {...}}
    stop        every node goes, the process exits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from typing import Any

from manta._private.config import Config
from manta._private.services import read_token
from manta._private.sim.fleet import Fleet
from manta._private.transport.connection import new_event_loop


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve_commands(fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "stop":
            return
        word, arg = line[0], int(line[1]) if len(line) > 1 else 0
        if word in ("kill", "silence") and 0 <= arg < len(fleet.agents):
            agent = fleet.agents[arg]
            agent.kill() if word == "kill" else agent.silence()
            _say({"killed" if word == "kill" else "silenced": agent.node_id.hex(), "at": time.time()})
        elif word == "stats":
            _say({"stats": fleet.stats()})
        else:
            _say({"error": f"unknown command {' '.join(line)!r}"})


async def run(args: argparse.Namespace) -> None:
    resources = {"CPU": float(args.cpus), **json.loads(args.resources)}
    fleet = Fleet(head_address=args.head, token=read_token(args.token_file), count=args.nodes, resources=resources,
                  duration=args.duration, config=Config.from_json(args.config))
    joined = await fleet.start(args.parallel)
    _say({"ready": {"nodes": [a.node_id.hex() for a in fleet.agents], "join_s": joined}})
    try:
        await serve_commands(fleet)
    finally:
        await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser("manta-sim", description="simulated nodes for a real head")
    parser.add_argument("--head", required=True, help="the head's address, tcp:HOST:PORT")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--cpus", type=float, default=4)
    parser.add_argument("--resources", default="{}", help="more resources of every node, as JSON")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds a task runs when its first argument does not say")
    parser.add_argument("--parallel", type=int, default=8, help="nodes joining at once")
    parser.add_argument("--config", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s sim %(levelname)s %(name)s: %(message)s")
    # Each node holds a listener and a few connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(run(args))


if __name__ == "__main__":
    main()
