"""Entry point of a node agent process: `python -m manta._private.node.main ...`.

Started by `services` by module name; reports READY and its address on
`--ready-fd`. The fork server is forked from it once the imports both need
are loaded (`ForkServer.forked`), before the agent reads its token.
"""

from __future__ import annotations

import json
import logging
import os

from manta._private.node.forkserver import ForkServer
from manta._private.services import service_arguments


def main(argv: list[str] | None = None) -> None:
    parser = service_arguments("manta-agent")
    parser.add_argument("--head", default="")
    parser.add_argument("--resources", default="{}")
    parser.add_argument("--object-store-memory", type=int, default=0)
    parser.add_argument("--prestart", type=int, default=0)
    parser.add_argument("--node-ip", default="")
    parser.add_argument("--config", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(name)s: %(message)s")
    # What the fork server and the agent both import, loaded once: the fork
    # server is then forked from here with them, instead of a new interpreter
    # importing them again (100-150 ms of CPU in init(), on 2 cores shared by
    # the driver, head, agent and fork server). Before the token is read:
    # the fork server's workers run user code, and are copies of this process.
    import asyncio

    import manta._private.objectstore.region  # noqa: F401
    import manta._private.transport.link  # noqa: F401
    from manta._private.node import zygote

    fork_server = ForkServer.forked(os.path.join(args.session_dir, "logs", "workers.log"), zygote.main)

    from manta._private.config import Config
    from manta._private.ids import new_node_id
    from manta._private.node.agent import NodeAgent, run_agent
    from manta._private.services import default_store_size, read_token
    from manta._private.transport.connection import new_event_loop

    token = read_token(args.token_file)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    agent = NodeAgent(
        session_dir=args.session_dir,
        head_address=args.head,
        token=token,
        node_id=new_node_id(),
        resources=json.loads(args.resources),
        store_capacity=args.object_store_memory or default_store_size(),
        address=args.listen[0],
        prestart=args.prestart,
        fork_server=fork_server,
        node_ip=args.node_ip,
        config=Config.from_json(args.config),
    )
    loop.run_until_complete(run_agent(agent, args.ready_fd))


if __name__ == "__main__":
    main()
