"""What a /metrics scrape costs, as a ratio against a /api/version request in the same run.

    PYTHONPATH=. python benchmarks/metrics_scrape.py

Starts a cluster (`manta start --head`), runs 2,000 tasks and records a user
counter so the tables hold something, then times N scrapes and N version
requests over one keep-alive connection each (median of each)."""

from __future__ import annotations

import glob
import http.client
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.security.integrity_support import cluster  # noqa: E402

N = 200


def timed(url: str, path: str, token: str) -> float:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    for _ in range(N):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        times.append(time.perf_counter() - t)
    conn.close()
    return statistics.median(times)


def main() -> None:
    with cluster("manta-bench-metrics-", "--num-cpus", "2", "--dashboard-port", "0") as c:
        rec = json.load(open(glob.glob(os.path.join(c.root, "*", "cluster.json"))[0]))
        token = open(rec["token_file"]).read().strip()
        c.driver("""
            from manta.util.metrics import Counter
            @manta.remote
            def f(i):
                Counter("bench_calls", tag_keys=("k",)).inc(tags={"k": str(i % 10)})
                return i
            manta.get([f.remote(i) for i in range(2000)])
        """)
        url = rec["dashboard_url"]
        version = timed(url, "/api/version", token)
        scrape = timed(url, "/metrics", token)
        print(f"/api/version median {version * 1e3:.2f} ms; /metrics median {scrape * 1e3:.2f} ms; "
              f"ratio {scrape / version:.1f}x (2,000 tasks in the table, 1 node)")


if __name__ == "__main__":
    main()
