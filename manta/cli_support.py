"""What the `manta` commands share (cli.py, cli_tools.py): the console,
failing with a message, table cells, and a connection to the head."""

from __future__ import annotations

import sys
from typing import Any


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _cell(value: object) -> Any:
    """A value for a table: as plain text (not rich markup, which could make
    links), its control sequences shown, not sent (runtime/terminal.py):
    names, keys and causes in state and audit records come from users' code."""
    from rich.text import Text

    from manta._private.runtime.terminal import safe_line

    return Text(" ".join(safe_line(line) for line in str(value).split("\n")))


def _fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]manta:[/] {escape(message)}")
    sys.exit(code)


def _head_session(address: str | None, token_file: str | None, body: Any) -> tuple[Any, Any]:
    """Runs `await body(conn)` on a connection to this machine's cluster's head
    (or the one at `address`); returns (its record, what body returned)."""
    import asyncio

    from manta import exceptions
    from manta._private import cluster
    from manta._private.auth.credentials import AuthFailed, Identity
    from manta._private.runtime.errors import error_from_remote
    from manta._private.transport.connection import ConnectionLost, RemoteError, connect

    try:
        rec = cluster.find_local_node(address)
        credential = cluster.credential_from_env_or_file(token_file or rec.token_file)
        assert credential is not None
        identity = Identity.of(credential)
    except (cluster.ClusterError, AuthFailed) as e:
        _fail(str(e))

    async def call() -> Any:
        # The head's unix socket where this machine has it: over TCP with TLS on,
        # a CLI without a certificate would be refused.
        conn = await connect(rec.head_local or rec.head_address, identity, lambda c, msg: None, timeout=5)
        try:
            return await body(conn)
        finally:
            conn.close()

    try:
        return rec, asyncio.run(call())
    except RemoteError as e:
        err = error_from_remote(e)
        _fail(f"{'refused' if isinstance(err, exceptions.AuthorizationError) else 'failed'}: {e}")
    except (OSError, ConnectionLost) as e:
        _fail(f"cannot reach the head at {rec.public_address}: {e}")
    raise AssertionError("unreachable")
