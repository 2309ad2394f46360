"""Bad resource values, at the API and from a hostile peer.

`inf`, `nan`, negative, non-number and absurdly large quantities are
refused with a ValueError naming the resource where a program writes them
(task and actor options, placement-group bundles, init), and where a peer
sends them past the API (a raw lease request to the agent, an actor or a
placement group to the head): the head and the agent answer the asker and
go on serving another driver.
"""

from __future__ import annotations

import math

import pytest

from manta._private import ids
from manta._private.protocol import messages as m

from .dos_support import Cluster, cluster_fixture, driver_in_process, served_meanwhile

pytestmark = pytest.mark.timeout(180)

BAD = [math.inf, math.nan, -1.0, "two", 1e300]


cluster = cluster_fixture()


def test_bad_resources_are_refused_at_the_api_and_from_peers(cluster: Cluster) -> None:
    with served_meanwhile(cluster):
        with driver_in_process(cluster) as rt:
            import manta
            from manta.util.placement_group import placement_group

            @manta.remote
            def f() -> int:
                return 1

            @manta.remote
            class A:
                pass

            for bad in BAD:
                # A non-number in options is a TypeError, as every other option of the wrong type.
                kind = TypeError if isinstance(bad, str) else ValueError
                with pytest.raises(kind, match="gadget"):
                    f.options(resources={"gadget": bad}).remote()
                with pytest.raises(kind, match="gadget"):
                    A.options(resources={"gadget": bad}).remote()
                with pytest.raises(ValueError, match="'gadget'"):
                    placement_group([{"CPU": 1, "gadget": bad}])
                if not isinstance(bad, str):
                    with pytest.raises(ValueError, match="num_cpus"):
                        f.options(num_cpus=bad).remote()

            # Past the API: what a hostile peer can put on the wire (msgspec lets
            # any float through, so these reach the head and the agent).
            for bad in (math.inf, math.nan, -3.0, 1e300):
                with pytest.raises(ValueError, match="'CPU'"):
                    rt.call_agent(m.RequestLease(job_id=rt.job_id, resources={"CPU": bad}, env_vars={}))
                spec = m.PlacementGroupSpec(pg_id=ids.new_placement_group_id(), bundles=[{"CPU": bad}],
                                            strategy="PACK", job_id=rt.job_id)
                with pytest.raises(ValueError, match="'CPU'"):
                    rt.call_head(m.CreatePlacementGroup(spec=spec))
            assert manta.get(f.remote()) == 1, "the asker itself is still served"
        assert cluster.alive()
    for bad in BAD:
        with pytest.raises(ValueError, match="'gadget'"):
            import manta

            manta.init(resources={"gadget": bad})
