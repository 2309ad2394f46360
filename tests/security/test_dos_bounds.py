"""The head's tables have bounds: one job filling one gets a clear error, alone.

A cluster with small caps (`_system_config`): KV entries and bytes per
namespace, named actors, placement groups; the asker past a cap gets a
ValueError naming it, the refusal is audited, nothing that was there is
dropped, and another driver (another namespace) is served as before.
History (finished jobs, dead actors) is trimmed, oldest first, to its cap.
"""

from __future__ import annotations

import pytest

from .dos_support import Cluster, cluster_fixture, driver_in_process, served_meanwhile

pytestmark = pytest.mark.timeout(240)

CAPS = {
    "max_kv_entries_per_namespace": 5,
    "max_kv_bytes_per_namespace": 64 * 1024,
    "max_named_actors": 3,
    "max_placement_groups": 3,
    "max_jobs": 4,
    "max_dead_actors": 5,
    "max_function_bytes": 4 << 20,
    # Above the 16 lease requests an owner keeps out per kind of task.
    "max_pending_demands": 40,
}


cluster = cluster_fixture(CAPS)


def test_full_tables_refuse_the_asker_alone(cluster: Cluster) -> None:
    with served_meanwhile(cluster):
        with driver_in_process(cluster, namespace="greedy"):
            import manta
            from manta.experimental import internal_kv as kv
            from manta.util.placement_group import placement_group, remove_placement_group

            # KV: five entries, then no sixth; overwriting one still works.
            for i in range(5):
                kv._internal_kv_put(f"k{i}", b"v", namespace="greedy")
            with pytest.raises(ValueError, match="max_kv_entries_per_namespace"):
                kv._internal_kv_put("k5", b"v", namespace="greedy")
            kv._internal_kv_put("k0", b"w", namespace="greedy")
            assert kv._internal_kv_get("k0", namespace="greedy") == b"w"
            with pytest.raises(ValueError, match="max_kv_bytes_per_namespace"):
                kv._internal_kv_put("k1", b"x" * (100 * 1024), namespace="greedy")
            kv._internal_kv_put("other", b"v", namespace="elsewhere")  # another namespace has its own

            @manta.remote
            def f_small() -> int:
                return 1

            # Named actors: three, then a clear error; unnamed ones still start.
            @manta.remote(num_cpus=0)
            class Named:
                def ping(self) -> str:
                    return "pong"

            held = [Named.options(name=f"n{i}").remote() for i in range(3)]
            with pytest.raises(ValueError, match="max_named_actors"):
                Named.options(name="n3").remote()
            assert manta.get(Named.remote().ping.remote()) == "pong"
            manta.kill(held[0])
            for _ in range(100):  # a killed actor's name is free again
                try:
                    again = Named.options(name="n3").remote()
                    break
                except ValueError:
                    import time

                    time.sleep(0.05)
            assert manta.get(again.ping.remote()) == "pong"

            # Placement groups: three, then a clear error; removing one makes room.
            pgs = [placement_group([{"CPU": 0.1}]) for _ in range(3)]
            with pytest.raises(ValueError, match="max_placement_groups"):
                placement_group([{"CPU": 0.1}])
            remove_placement_group(pgs[0])
            extra = placement_group([{"CPU": 0.1}])
            manta.get(extra.ready(), timeout=30)

            # Functions: a closure that carries 8 MiB passes the cluster's budget for them.
            blob = b"b" * (8 << 20)

            @manta.remote
            def heavy() -> int:
                return len(blob)

            with pytest.raises(ValueError, match="max_function_bytes"):
                manta.get(heavy.remote(), timeout=60)
            assert manta.get(f_small.remote()) == 1

            # Dead actors are history: the oldest go past max_dead_actors.
            for _ in range(12):
                a = Named.remote()
                manta.get(a.ping.remote())
                manta.kill(a)
            from manta.util.state import list_actors

            # Trimmed when an actor is created: those that died since may be over, by a few.
            dead = [a for a in list_actors(limit=1000) if a.state == "DEAD"]
            assert len(dead) <= CAPS["max_dead_actors"] + 2, len(dead)  # 16 died in all

        refused = [r for r in cluster.audit() if r["outcome"] == "refused"]
        assert any("max_kv_entries_per_namespace" in r["detail"] and r["action"] == "kv.put" for r in refused)
        assert any("max_named_actors" in r["detail"] for r in refused)
        assert any("max_placement_groups" in r["detail"] for r in refused)
        # The log says it once per interval per principal (rate-limited), not once per refusal.
        logged = [ln for ln in cluster.log("head").splitlines() if "refused" in ln and "job" in ln]
        assert 1 <= len(logged) < 3, logged

    # Finished jobs are history too: more drivers than max_jobs come and go.
    for _ in range(CAPS["max_jobs"] + 3):
        with driver_in_process(cluster):
            pass
    with driver_in_process(cluster):
        from manta.util.state import list_jobs

        assert len(list_jobs(limit=1000)) <= CAPS["max_jobs"]
    assert cluster.alive()


def test_an_agents_queue_of_requests_no_node_can_serve_is_bounded(cluster: Cluster) -> None:
    import threading
    import time

    from manta._private.protocol import messages as m

    with served_meanwhile(cluster):
        with driver_in_process(cluster, namespace="parker") as rt:
            import manta

            answers: list[str] = []

            def ask() -> None:
                try:
                    rt.call_agent(m.RequestLease(job_id=rt.job_id, resources={"CPU": 64.0}, env_vars={}))
                    answers.append("granted")
                except Exception as e:
                    answers.append(f"{type(e).__name__}: {e}")

            # Lease requests sent by hand for more CPUs than any node has: each
            # waits for a node that can serve it, up to the bound.
            threads = [threading.Thread(target=ask, daemon=True) for _ in range(43)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while len(answers) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(answers) == 3, answers
            assert all(a.startswith("ValueError") and "max_pending_demands" in a for a in answers), answers
            assert manta.get(manta.remote(lambda: 5).remote(), timeout=60) == 5, "the asker is still served"
