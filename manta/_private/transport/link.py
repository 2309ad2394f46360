"""The connection to the head, kept across head restarts.

A head that keeps its state in external storage (Redis) may be killed and
started again on the same address. Its nodes, drivers and workers must
ride that out: running tasks and actors do not need the head, and what
does need it can wait. So while `persistent`, a lost connection is dialled
again for up to `grace` seconds; requests made meanwhile, and those that
were waiting for an answer, are sent again once the head is back (after
`reregister` has told it who we are). The head answers them idempotently.

With an in-memory head there is nothing to wait for: `on_gone` is called
at once, with a message saying what happened. It is also called when the
grace runs out, so nothing ever hangs on a head that is not coming back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from manta._private.auth.credentials import Identity
from manta._private.protocol.identity import Role
from manta._private.transport.connection import AuthRejected, Connection, ConnectionLost, Handler, connect
from manta._private.transport.gate import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)


class HeadLink:
    def __init__(
        self,
        address: str,
        identity: Identity,
        handler: Handler,
        *,
        on_gone: Callable[[str], None],
        reregister: Callable[[Connection], Awaitable[None]] | None = None,
        grace: float,
        name: str = "head",
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self.address = address
        self.identity = identity
        self.handler = handler
        self.on_gone = on_gone
        self.reregister = reregister
        self.grace = grace
        self.name = name
        self.conn: Connection | None = None
        self.persistent = False
        self.gone = False
        self._redialing = False
        self._keys = itertools.count(1)
        self._pending: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self._queued: list[Any] = []

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed

    async def connect(self, timeout: float = 30.0) -> None:
        self.conn = await connect(
            self.address, self.identity, self.handler, name=self.name, on_close=self._lost, timeout=timeout,
            expect=Role.CLUSTER, limits=self.limits,
        )

    # -- sending ----------------------------------------------------------

    def send(self, msg: Any) -> None:
        if self.up:
            self.conn.send(msg)  # type: ignore[union-attr]
        elif not self.gone:
            self._queued.append(msg)

    def request_cb(self, msg: Any, callback: Callable[[Any], None]) -> None:
        if self.gone:
            callback(ConnectionLost(f"the {self.name} is gone"))
            return
        key = next(self._keys)
        self._pending[key] = (msg, callback)
        if self.up:
            self._issue(key)

    def request(self, msg: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(reply: Any) -> None:
            if fut.done():
                return
            if isinstance(reply, BaseException):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

        self.request_cb(msg, done)
        return fut

    def _issue(self, key: int) -> None:
        msg, _ = self._pending[key]
        assert self.conn is not None
        self.conn.request_cb(msg, lambda reply: self._answered(key, reply))

    def _answered(self, key: int, reply: Any) -> None:
        if isinstance(reply, ConnectionLost) and self.persistent and not self.gone:
            return  # asked again once the head is back
        item = self._pending.pop(key, None)
        if item is not None:
            item[1](reply)

    # -- losing and regaining the head ------------------------------------

    def _lost(self, conn: Connection) -> None:
        if conn is not self.conn or self.gone:
            return
        if not self.persistent:
            self._give_up(
                f"lost the connection to the cluster's head at {self.address}: it stopped or "
                f"crashed, and it kept its state in memory, so this cluster is gone"
            )
            return
        if not self._redialing:
            self._redialing = True
            log.warning("lost the head at %s; waiting up to %g s for it to come back", self.address, self.grace)
            asyncio.get_running_loop().create_task(self._redial())

    async def _redial(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        try:
            while loop.time() < deadline and not self.gone:
                try:
                    conn = await connect(
                        self.address, self.identity, self.handler, name=self.name, on_close=self._lost,
                        timeout=max(0.1, min(2.0, deadline - loop.time())), expect=Role.CLUSTER,
                        limits=self.limits,
                    )
                except AuthRejected as e:
                    self._give_up(f"the head at {self.address} came back and refused this process: {e}")
                    return
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.1)
                    continue
                try:
                    if self.reregister is not None:
                        await self.reregister(conn)
                except Exception as e:  # noqa: BLE001 - any failure: dial again
                    log.warning("re-registering with the head failed: %s", e)
                    conn.close()
                    await asyncio.sleep(0.1)
                    continue
                self.conn = conn
                log.info("the head at %s is back", self.address)
                queued, self._queued = self._queued, []
                for msg in queued:
                    conn.send(msg)
                for key in list(self._pending):
                    self._issue(key)
                if conn.closed:
                    continue  # lost again at once: keep dialling
                return
            if not self.gone:
                self._give_up(f"the head at {self.address} did not come back within {self.grace:g} s")
        finally:
            self._redialing = False

    def _give_up(self, why: str) -> None:
        if self.gone:
            return
        self.gone = True
        err = ConnectionLost(why)
        pending, self._pending = self._pending, {}
        self._queued = []
        for _, callback in pending.values():
            try:
                callback(err)
            except Exception:
                log.exception("head request callback failed")
        self.on_gone(why)

    def close(self) -> None:
        self.gone = True
        if self.conn is not None:
            self.conn.close()
