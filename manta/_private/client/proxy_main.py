"""Entry point of a client session's proxy driver, started by the head (head/clients.py).

What it needs arrives as JSON on stdin (never on the command line): the
session's sockets, the client's token, the key that attaches it to its
session, and the cluster's Config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from manta._private.client.proxy import Proxy, describe_job, exit_when_gone
from manta._private.config import Config
from manta._private.ids import new_worker_id
from manta._private.protocol import messages as m
from manta._private.protocol.client_messages import chunk_bytes
from manta._private.protocol.identity import Credential
from manta._private.runtime import context
from manta._private.runtime.core import CoreRuntime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--session-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s client proxy: %(message)s")
    setup = json.loads(sys.stdin.read())
    config = Config.from_json(setup["config"])
    session = m.SessionInfo(
        session_dir=args.session_dir, head_address=setup["head"], agent_address=setup["agent"],
        credential=Credential(token=setup["token"]), node_ip=setup["node_ip"],
    )
    proxy: Proxy | None = None

    def on_log(msg: m.LogLines) -> None:
        if proxy is not None:
            proxy.log_lines(msg)

    rt = CoreRuntime(session, config, is_driver=True, worker_id=new_worker_id(), namespace=setup["namespace"],
                     on_log=on_log)
    rt.start()
    context.install(rt)
    proxy = Proxy(rt, chunk_bytes(config.max_frame_bytes))
    rt.run(proxy.attach(setup["token"], bytes.fromhex(setup["key"])))
    describe_job(rt, setup.get("entrypoint", ""))
    exit_when_gone(proxy)


if __name__ == "__main__":
    main()
