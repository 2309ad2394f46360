"""Renews this node's TLS certificate before it expires, without a restart.

When less than a third of the validity is left, the agent makes a new key
and CSR, has the head sign it (am.IssueCert over its authenticated link) and
replaces the session's files; every process of the node (the agent, the
head on its machine, drivers and workers) reloads them before its next new
connection (tls_contexts.TlsContexts.refresh), and connections already open go on."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from manta._private.auth import pki, tls_contexts
from manta._private.protocol import auth_messages as am

log = logging.getLogger(__name__)


def check_every(cert: bytes) -> float:
    """A thirtieth of the validity, within [0.2 s, 1 h]: a renewal is due long before expiry."""
    start, end = pki.validity(cert)
    return min(3600.0, max(0.2, (end - start).total_seconds() / 30))


async def renew(agent: Any) -> None:
    tls = agent.identity.tls
    key = pki.new_key()
    hosts = tuple(h for h in (agent.node_ip,) if h)
    reply = await agent.head.request(am.IssueCert(csr=pki.make_csr(key, agent.identity.principal.name), hosts=hosts))
    tls_contexts.save_material(tls.tls_dir, tls_contexts.TlsMaterial(ca=reply.ca, cert=reply.cert, key=pki.key_pem(key)))
    tls.refresh()
    _, end = pki.validity(reply.cert)
    log.info("renewed this node's TLS certificate (valid until %s)", end.isoformat())


async def renewal_loop(agent: Any) -> None:
    while not agent.stopping.is_set():
        tls = agent.identity.tls
        if tls is None:
            return
        await asyncio.sleep(check_every(tls.material.cert))
        tls.refresh()  # another process of this node may have renewed it
        if not pki.needs_renewal(tls.material.cert):
            continue
        try:
            await renew(agent)
        except Exception as e:  # the head away, or refusing: try again at the next check
            log.warning("renewing this node's TLS certificate failed: %s", e)


def start_renewal(agent: Any) -> asyncio.Task[None] | None:
    if agent.identity.tls is None:
        return None
    return asyncio.get_running_loop().create_task(renewal_loop(agent))
