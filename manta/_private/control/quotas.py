"""Quotas, decided without I/O: what a job or a token holds, and whether a
request would take it past its limit.

A token's quota (`manta token create --max-actors ...`) bounds what all the
jobs started with that token hold together, so starting more jobs does not
get round it; `Config.job_max_*` bounds each job of anyone, the cluster's
owner included. The head counts and decides (head/quotas.py): every actor,
placement group and KV write passes through it, and a job cannot report its
own use, so it cannot under-report.
"""

from __future__ import annotations

from dataclasses import dataclass

from manta._private.protocol.auth_messages import Quota


@dataclass
class Use:
    actors: int = 0
    cpus: float = 0.0
    kv_bytes: int = 0


def over(quota: Quota, use: Use, ask: Use, whose: str) -> str:
    """Why `ask` on top of `use` would pass `quota` ("" if it would not).

    Only what grows is checked: a request that holds no more of a thing
    (a KV write no larger than the value it replaces) passes even where the
    use is already over, say after a quota was lowered."""
    checks = (
        ("max_actors", quota.max_actors, use.actors, ask.actors, "live actors"),
        ("max_cpus", quota.max_cpus, use.cpus, ask.cpus, "CPUs held by actors and placement groups"),
        ("max_kv_bytes", quota.max_kv_bytes, use.kv_bytes, ask.kv_bytes, "bytes in the KV store"),
    )
    for name, limit, held, more, what in checks:
        if limit is not None and more > 0 and held + more > limit:
            return (f"{whose} would pass its quota {name}={limit:g}: it holds {held:g} {what}, "
                    f"and this asks for {more:g} more")
    return ""


class KvLedger:
    """Who wrote each KV entry that is still there, and how many bytes each
    job and token holds so: a later write to a key moves its bytes to the
    new writer, a delete frees them from whoever wrote them."""

    def __init__(self) -> None:
        self.writer: dict[tuple[str, bytes], tuple[int, str, int]] = {}  # key -> (job, token, bytes)
        self.by_job: dict[int, int] = {}
        self.by_token: dict[str, int] = {}

    def held(self, key: tuple[str, bytes], job: int, token: str) -> tuple[int, int]:
        """The bytes of `key` already charged to `job` and to `token`."""
        w = self.writer.get(key)
        if w is None:
            return 0, 0
        return (w[2] if w[0] == job else 0), (w[2] if token and w[1] == token else 0)

    def put(self, key: tuple[str, bytes], job: int, token: str, size: int) -> None:
        self.delete(key)
        self.writer[key] = (job, token, size)
        self.by_job[job] = self.by_job.get(job, 0) + size
        if token:
            self.by_token[token] = self.by_token.get(token, 0) + size

    def delete(self, key: tuple[str, bytes]) -> None:
        w = self.writer.pop(key, None)
        if w is None:
            return
        job, token, size = w
        _release(self.by_job, job, size)
        if token:
            _release(self.by_token, token, size)


def _release(table: dict, key: object, size: int) -> None:
    left = table[key] - size
    if left:
        table[key] = left
    else:
        del table[key]
