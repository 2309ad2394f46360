"""The fuzz run: hostile frames to every listener, before and after authentication.

Listeners: the head (TCP and its Unix socket), the node agent (Unix and
TCP), another driver's inbound server and its actor's worker's. Each gets
an equal share of MANTA_FUZZ_FRAMES frames, half from a peer with no
credential and half over connections authenticated with a job's real
pass: a driver with a `submit` token of another namespace (`fuzz_frames`
says what they hold). Then:

- no process crashed: the head, the agent, the other driver and its
  worker are alive, and that driver runs tasks and calls its actor;
- memory stayed bounded: the head's and the agent's RSS grew by less than
  RSS_BOUND over the run, though headers claimed up to 4 GiB;
- this driver, which sent the frames, is served too.

`make test` runs a short slice (3,000 frames). The full run:

    MANTA_FUZZ_FRAMES=200000 MANTA_FUZZ_REPORT=fuzz.json \\
        python -m pytest tests/security/test_dos_fuzz.py -s -p no:cacheprovider

(`make fuzz`); RELIABILITY.md has its figures.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from manta._private.auth.credentials import Identity
from manta._private.auth.handshake import ClientHandshake
from manta._private.protocol import messages as m

from .dos_support import Cluster, RssSampler, Victim, driver_in_process
from .fuzz_frames import PostAuthPeer, Tally, post_auth_frames, pre_auth_frames, send_pre_auth

FRAMES = int(os.environ.get("MANTA_FUZZ_FRAMES", "3000"))
REPORT = os.environ.get("MANTA_FUZZ_REPORT", "")
RSS_BOUND = 256 << 20
# Frames between two checks that every process is alive.
CHECK_EVERY = 250

pytestmark = pytest.mark.timeout(max(120, FRAMES // 20))


def _handler_errors(text: str) -> dict[str, int]:
    """The last line of each traceback in a log, counted."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            last = lines[j][:160] if j < len(lines) else "?"
            out[last] = out.get(last, 0) + 1
    return out


def _run(strategy: st.SearchStrategy[Any], n: int, send: Any, check: Any) -> None:
    sent = [0]

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def each(item: tuple[str, bytes]) -> None:
        send(*item)
        sent[0] += 1
        if sent[0] % CHECK_EVERY == 0:
            check()

    each()


def test_fuzz_every_listener() -> None:
    cluster = Cluster()
    victim: Victim | None = None
    try:
        victim = Victim(cluster)
        # The attacker: a job of another namespace, with a `submit` token (the owner,
        # an admin, may stop or cancel anything by design).
        token = cluster.token("--role", "submit", "--namespace", "fuzz")
        with driver_in_process(cluster, token, namespace="fuzz") as rt:
            import manta

            nodes = rt.call_head(m.GetClusterInfo()).nodes
            targets = {
                "head tcp": cluster.head_tcp,
                "head unix": cluster.head_unix,
                "agent unix": cluster.agent_unix,
                "agent tcp": nodes[0].address,
                "driver": victim.info["driver"],
                "worker": victim.info["worker"],
            }
            assert targets["agent tcp"].startswith("tcp:"), targets
            identity: Identity = rt.identity
            job_id: int = rt.job_id
            max_frame = rt.config.max_frame_bytes
            # A real proof, for the mutated-proof frames (made against a made-up challenge).
            proof = ClientHandshake(identity).receive_challenge(m.encode(m.Challenge(nonce=b"\1" * 32)))

            def check() -> None:
                assert cluster.alive(), "the head or the agent died"
                assert victim is not None and victim.alive(), "the other driver or its worker died:\n" + (
                    victim.output() if victim else "")

            sampler = RssSampler(cluster)
            share = max(2, FRAMES // len(targets))
            figures: dict[str, dict[str, Any]] = {}
            started = time.monotonic()
            for name, address in targets.items():
                print(f"fuzzing {name} at {address}", flush=True)
                t0 = time.monotonic()
                pre = Tally()
                _run(pre_auth_frames(proof), share // 2, lambda kind, data, a=address, t=pre: send_pre_auth(
                    a, t, kind, data), check)
                peer = PostAuthPeer(address, identity)
                try:
                    _run(post_auth_frames(job_id, max_frame), share - share // 2, peer.send, check)
                finally:
                    peer.close()
                check()
                figures[name] = {
                    "address": address, "before_auth": pre.frames, "after_auth": peer.tally.frames,
                    "reconnects": pre.reconnects + peer.tally.reconnects, "seconds": round(time.monotonic() - t0, 1),
                    "kinds_before": pre.kinds, "kinds_after_top": dict(sorted(
                        peer.tally.kinds.items(), key=lambda kv: -kv[1])[:8]),
                }
            growth = sampler.stop()
            elapsed = time.monotonic() - started

            # Still serving: this driver, and the other one (its task and its actor).
            @manta.remote
            def double(x: int) -> int:
                return 2 * x

            assert manta.get([double.remote(i) for i in range(10)], timeout=60) == [2 * i for i in range(10)]
        result = victim.finish()
        victim = None
        assert result == {"squares": [i * i for i in range(20)], "count": 5}, result
        assert cluster.alive()
        errors = {name: _handler_errors(cluster.log(name)) for name in ("head", "agent")}
        total = sum(f["before_auth"] + f["after_auth"] for f in figures.values())
        report = {
            "frames": total, "seconds": round(elapsed, 1), "crashes": 0,
            "peak_rss_growth_mib": {k: round(v / 2**20, 1) for k, v in growth.items()},
            "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in sampler.peak.items()},
            "listeners": figures,
            # Exceptions a handler raised and the connection caught (the process went on).
            "handler_errors": {k: sum(v.values()) for k, v in errors.items()},
            "handler_error_kinds": {k: dict(list(v.items())[:10]) for k, v in errors.items()},
        }
        print("FUZZ " + json.dumps(report, indent=1))
        if REPORT:
            with open(REPORT, "w") as f:
                json.dump(report, f, indent=1)
        for who, grew in growth.items():
            assert grew < RSS_BOUND, f"the {who}'s RSS grew by {grew >> 20} MiB under the fuzz run"
        assert total >= FRAMES - len(targets) * 2
    finally:
        if victim is not None:
            victim.close()
        if REPORT:  # the services' logs beside the figures
            shutil.copytree(os.path.join(cluster.session_dir, "logs"), REPORT + ".logs", dirs_exist_ok=True)
        cluster.stop()

