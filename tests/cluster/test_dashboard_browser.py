"""The dashboard in a real browser: Debian's Chromium, driven by playwright
(the system browser, none downloaded), against a real cluster.

One cluster and one browser for the module: a driver leaves a named
detached actor, a detached placement group, tasks that finished and one
that failed; the browser logs in with a view token, then with the
cluster's own (admin) token, opens every page and checks what it shows,
that a task run while a page is open appears without a reload, and that
the page logged no errors. Screenshots go to artifacts/dashboard/ (path
printed). docs/dashboard.md.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.cluster.test_http import call
from tests.security.integrity_support import REPO_ROOT, Cluster, cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.path.join(REPO_ROOT, "artifacts", "dashboard")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed and `make chromium` could not install it", allow_module_level=True)

# What a page may log as an error: the browser's note of an answer that is
# not 2xx, for requests the page makes knowing they may be refused (who am
# I before login; the audit log for a view token).
EXPECTED_REFUSALS = ("/api/session", "/api/audit")

DRIVER = """
from manta.util.placement_group import placement_group

@manta.remote
def square(x):
    print(f"square-of-{x}")
    return x * x

@manta.remote
def explode():
    raise ValueError("kaboom-dashboard-test")

@manta.remote
class Counter:
    def inc(self):
        return 1

c = Counter.options(name="dash-counter", lifetime="detached").remote()
assert manta.get(c.inc.remote()) == 1
pg = placement_group([{"CPU": 0.1}], name="dash-pg", lifetime="detached")
manta.get(pg.ready())
assert manta.get([square.remote(i) for i in range(8)]) == [i * i for i in range(8)]
try:
    manta.get(explode.remote())
except Exception as e:
    assert "kaboom-dashboard-test" in str(e)
print(json.dumps("ok"))
"""


@dataclass
class Dash:
    c: Cluster
    url: str
    owner: str
    view: str
    job: str  # a submitted job's id
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    with cluster("manta-dash-", "--num-cpus", "2", "--dashboard-port", "0") as c:
        rec = _record(c)
        with open(rec["token_file"]) as f:
            owner = f.read().strip()
        view = c.cli("token", "create", "--role", "view").stdout.strip().splitlines()[-1]
        assert c.result(DRIVER) == "ok"
        url = rec["dashboard_url"]
        r = call(url + "/api/jobs/", "POST", token=owner, body=json.dumps(
            {"entrypoint": "python -c \"print('dash-job-log-line')\""}).encode())
        assert r.status == 200, r.body
        yield Dash(c, url, owner, view, r.json()["submission_id"])


def _record(c: Cluster) -> dict[str, Any]:
    for d in os.listdir(c.root):
        path = os.path.join(c.root, d, "cluster.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)  # type: ignore[no-any-return]
    raise AssertionError(f"no cluster.json under {c.root}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.makedirs(ARTIFACTS, exist_ok=True)
    print(f"\ndashboard screenshots: {ARTIFACTS}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, dash: Dash) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(15_000)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            if "Failed to load resource" in msg.text and any(p in where for p in EXPECTED_REFUSALS):
                return
            dash.errors.append(f"console: {msg.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda e: dash.errors.append(f"page error: {e}"))
    return page


def _login(page: Any, dash: Dash, token: str) -> None:
    page.goto(dash.url + "/dashboard/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", token)
    page.click("#login-form button")
    page.wait_for_selector("#nav:not([hidden])")


def _open(page: Any, name: str) -> None:
    page.evaluate(f"location.hash = '#/{name}'")
    page.wait_for_selector(f"#page[data-page='{name}']")


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def test_a_wrong_token_is_refused_and_a_view_token_sees_state_but_not_the_audit_log(browser: Any, dash: Dash) -> None:
    page = _page(browser, dash)
    page.goto(dash.url + "/dashboard/")
    page.fill("#token", "mt1.nosuchtoken.secret")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:text('Login failed')")
    dash.errors[:] = [e for e in dash.errors if "/api/login" not in e]  # that refusal was the point

    _login(page, dash, dash.view)
    assert "(view)" in page.inner_text("#who")
    assert page.is_hidden("#nav-audit")
    _open(page, "actors")
    page.wait_for_selector("#actors-table >> text=dash-counter")
    _open(page, "audit")
    refused = page.wait_for_selector("#audit-refused")
    assert "admin" in refused.inner_text()
    _shot(page, "audit-refused-for-view")
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    page.context.close()
    assert not dash.errors, dash.errors


def test_an_admin_opens_every_page_and_sees_the_cluster(browser: Any, dash: Dash) -> None:
    page = _page(browser, dash)
    _login(page, dash, dash.owner)
    assert "(admin)" in page.inner_text("#who")

    page.wait_for_selector("#card-nodes")
    assert page.inner_text("#card-nodes .n") == "1"
    page.wait_for_selector("#nodes-table >> text=ALIVE")
    for chart in ("cpu", "memory", "object_store", "rates"):
        page.wait_for_selector(f"#chart-{chart} .uplot")
    # The head's history ring has samples (one per 5 s, the first after 10 s), drawn.
    page.wait_for_selector("#chart-memory[data-points]:not([data-points='0'])", timeout=30_000)
    _shot(page, "overview")

    _open(page, "jobs")
    page.wait_for_selector("#drivers-table tbody tr")
    page.click(f"#jobs-table >> text={dash.job}")
    page.wait_for_selector("#job-log:has-text('dash-job-log-line')", timeout=30_000)
    _shot(page, "jobs")

    _open(page, "actors")
    row = page.wait_for_selector("#actors-table tr:has-text('dash-counter')")
    assert "ALIVE" in row.inner_text() and "Counter" in row.inner_text()
    _shot(page, "actors")

    _open(page, "tasks")
    page.select_option("#task-state", "FAILED")
    page.wait_for_selector("#tasks-table >> text=explode")
    assert "square" not in page.inner_text("#tasks-table")
    page.click("#tasks-table tr:has-text('explode')")
    trace = page.wait_for_selector("#task-traceback").inner_text()
    assert "Traceback" in trace and "kaboom-dashboard-test" in trace and "ValueError" in trace
    assert "failed" in page.inner_text("#task-story")
    _shot(page, "tasks-failed")

    _open(page, "placement-groups")
    page.wait_for_selector("#pgs-table tr:has-text('dash-pg')")
    assert "CREATED" in page.inner_text("#pgs-table")
    _shot(page, "placement-groups")

    _open(page, "objects")
    page.wait_for_selector("#object-nodes-table tbody tr")
    page.wait_for_selector("#object-owners-table")
    # Each store's own report is there: pinned and spilled bytes.
    page.wait_for_selector("#object-nodes-table >> text=objects)")
    _shot(page, "objects")

    _open(page, "logs")
    # A worker's own file (what square() printed), opened and read.
    page.click("#log-files tbody tr:has-text('.out') >> nth=0", timeout=30_000)
    page.wait_for_selector("#log-text:has-text('square-of-')")
    _shot(page, "logs")

    _open(page, "timeline")
    page.wait_for_function("Number(document.querySelector('#stream')?.dataset.bars || 0) > 0", timeout=15_000)
    _shot(page, "timeline")

    _open(page, "audit")
    page.wait_for_selector("#audit-table >> text=auth.login")
    _shot(page, "audit")
    page.context.close()
    assert not dash.errors, dash.errors


def test_a_task_run_while_the_page_is_open_appears_without_a_reload(browser: Any, dash: Dash) -> None:
    page = _page(browser, dash)
    _login(page, dash, dash.owner)
    _open(page, "tasks")
    page.wait_for_selector("#tasks-table")
    assert "arrives_later" not in page.inner_text("#tasks-table")
    before = page.evaluate("performance.getEntriesByType('navigation').length")
    dash.c.driver("""
@manta.remote
def arrives_later():
    return 7
assert manta.get(arrives_later.remote()) == 7
""")
    page.wait_for_selector("#tasks-table >> text=arrives_later", timeout=20_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == before
    _open(page, "timeline")
    page.wait_for_selector("#stream-legend >> text=arrives_later")
    _shot(page, "live-update")
    page.context.close()
    assert not dash.errors, dash.errors
