"""What an open dashboard costs the head: its CPU while a browser shows a page,
as a ratio against the same head idle in the same run.

    PYTHONPATH=. python benchmarks/dashboard_cpu.py [seconds per phase]

Starts a cluster (`manta start --head`) with a detached actor and 500 tasks
in its tables, then reads the head process's CPU time (user + system) over
three phases of equal length: no browser; Chromium on the overview (polled
every 2 s, with its charts); Chromium on the task timeline (polled every
second). Needs Debian's chromium and playwright (the test extras)."""

from __future__ import annotations

import glob
import json
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.security.integrity_support import cluster  # noqa: E402

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0


def cpu_over(proc: psutil.Process, seconds: float) -> float:
    """Share of one core the process used over `seconds`."""
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds


def main() -> None:
    from playwright import sync_api

    with cluster("manta-bench-dash-", "--num-cpus", "2", "--dashboard-port", "0") as c:
        rec = json.load(open(glob.glob(os.path.join(c.root, "*", "cluster.json"))[0]))
        token = open(rec["token_file"]).read().strip()
        head = psutil.Process(rec["pids"][0])
        c.driver("""
            @manta.remote
            class Keeper:
                def ping(self):
                    return 1
            k = Keeper.options(name="keeper", lifetime="detached").remote()
            manta.get(k.ping.remote())
            @manta.remote
            def f(i):
                return i
            manta.get([f.remote(i) for i in range(500)])
        """)
        idle = cpu_over(head, SECONDS)
        shown = {}
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(rec["dashboard_url"] + "/dashboard/")
            page.fill("#token", token)
            page.click("#login-form button")
            page.wait_for_selector("#nav:not([hidden])")
            for name in ("overview", "timeline"):
                page.evaluate(f"location.hash = '#/{name}'")
                page.wait_for_selector(f"#page[data-page='{name}']")
                time.sleep(2)
                shown[name] = cpu_over(head, SECONDS)
            browser.close()
        print(f"head CPU, share of one core over {SECONDS:g} s each: idle {idle:.3f}; "
              + "; ".join(f"{k} open {v:.3f} ({v / idle if idle else float('inf'):.1f}x idle, "
                          f"+{(v - idle) * 100:.1f}% of a core)" for k, v in shown.items()))


if __name__ == "__main__":
    main()
