"""The head's HTTP server on a real cluster (`manta start --head`): open routes,
bearer tokens and browser sessions, CSRF, bad input, /metrics (docs/http.md)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.security.integrity_support import Cluster, cluster


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", *, token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


@dataclass
class Http:
    c: Cluster
    url: str
    owner: str  # the cluster token file's content
    view: str
    submit: str


@pytest.fixture(scope="module")
def http() -> Iterator[Http]:
    with cluster("manta-http-", "--num-cpus", "2", "--dashboard-port", "0") as c:
        out = c.cli("status").stdout
        records = [os.path.join(c.root, d, "cluster.json") for d in os.listdir(c.root)
                   if os.path.exists(os.path.join(c.root, d, "cluster.json"))]
        with open(records[0]) as f:
            rec = json.load(f)
        url = rec["dashboard_url"]
        assert url.startswith("http://127.0.0.1:"), (rec, out)
        with open(rec["token_file"]) as f:
            owner = f.read().strip()
        view = c.cli("token", "create", "--role", "view").stdout.strip().splitlines()[-1]
        submit = c.cli("token", "create", "--role", "submit").stdout.strip().splitlines()[-1]
        yield Http(c, url, owner, view, submit)


def test_start_prints_the_url_and_open_routes_need_no_credential(http: Http) -> None:
    v = call(http.url + "/api/version")
    assert v.status == 200 and v.json()["version"] == "4" and v.json()["manta_version"]
    for path in ("/api/gcs_healthz", "/-/healthz"):
        r = call(http.url + path)
        assert (r.status, r.body) == (200, b"success")


@pytest.mark.parametrize("path,role", [("/api/session", "view"), ("/metrics", "view"),
                                       ("/api/metrics/history", "view"), ("/api/tokens", "admin")])
def test_every_other_route_needs_a_credential_and_the_role(http: Http, path: str, role: str) -> None:
    r = call(http.url + path)
    assert r.status == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert "needs a credential" in r.json()["message"]
    bad = call(http.url + path, token="mt1.deadbeef." + "0" * 64)
    assert bad.status == 401 and "not known" in bad.json()["message"]
    assert call(http.url + path, token="not a token at all").status == 401
    assert call(http.url + path, headers={"Authorization": "Basic abc"}).status == 401
    assert call(http.url + path, token=http.owner).status == 200
    low = call(http.url + path, token=http.view)
    if role == "view":
        assert low.status == 200
    else:
        assert low.status == 403 and "needs role admin" in low.json()["message"]
        assert call(http.url + path, token=http.submit).status == 403


def test_bearer_tokens_resolve_to_their_principal(http: Http) -> None:
    owner = call(http.url + "/api/session", token=http.owner).json()
    assert owner["principal"]["role"] == "admin" and owner["via"] == "bearer"
    view = call(http.url + "/api/session", token=http.view).json()
    assert view["principal"]["role"] == "view" and view["principal"]["token_id"] == http.view.split(".")[1]
    # A token's wrong secret is refused, as in a handshake.
    forged = http.view[:-4] + ("0000" if not http.view.endswith("0000") else "1111")
    assert call(http.url + "/api/session", token=forged).status == 401


def test_a_revoked_token_and_its_sessions_are_refused(http: Http) -> None:
    token = http.c.cli("token", "create", "--role", "view").stdout.strip().splitlines()[-1]
    login = call(http.url + "/api/login", "POST", body=json.dumps({"token": token}).encode())
    cookie = login.headers["Set-Cookie"].split(";")[0]
    assert call(http.url + "/api/session", headers={"Cookie": cookie}).status == 200
    http.c.cli("token", "revoke", token.split(".")[1])
    assert call(http.url + "/api/session", token=token).status == 401
    r = call(http.url + "/api/session", headers={"Cookie": cookie})
    assert r.status == 401 and "revoked" in r.json()["message"]


def test_browser_login_sets_a_strict_httponly_cookie_and_csrf_is_enforced(http: Http) -> None:
    r = call(http.url + "/api/login", "POST", body=json.dumps({"token": http.submit}).encode())
    assert r.status == 200
    set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    cookie = set_cookie.split(";")[0]
    csrf = r.json()["csrf_token"]
    assert r.json()["principal"]["role"] == "submit"
    me = call(http.url + "/api/session", headers={"Cookie": cookie}).json()
    assert me["via"] == "cookie" and me["csrf_token"] == csrf
    # A state-changing request with the cookie and no (or a wrong) CSRF token is refused.
    no = call(http.url + "/api/logout", "POST", headers={"Cookie": cookie})
    assert no.status == 403 and "X-CSRF-Token" in no.json()["message"]
    wrong = call(http.url + "/api/logout", "POST", headers={"Cookie": cookie, "X-CSRF-Token": "0" * 64})
    assert wrong.status == 403
    assert call(http.url + "/api/session", headers={"Cookie": cookie}).status == 200
    out = call(http.url + "/api/logout", "POST", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert out.status == 200
    gone = call(http.url + "/api/session", headers={"Cookie": cookie})
    assert gone.status == 401 and "log in again" in gone.json()["message"]
    # A made-up session id is no session.
    assert call(http.url + "/api/session", headers={"Cookie": "manta_session=" + "ab" * 32}).status == 401


def test_logins_and_refusals_are_audited(http: Http) -> None:
    # Failed logins are recorded at most 5 a second per address (auth/audit.py): the
    # tests before made many; this one's are in a second of their own.
    time.sleep(1.1)
    call(http.url + "/api/login", "POST", body=json.dumps({"token": http.view}).encode())
    call(http.url + "/api/login", "POST", body=json.dumps({"token": "mt1.nope." + "1" * 64}).encode())
    call(http.url + "/api/tokens", token=http.view)
    records = http.c.audit_records()
    view_id = http.view.split(".")[1]
    assert any(r["action"] == "auth.login" and r["principal"] == f"token {view_id}" for r in records)
    assert any(r["action"] == "auth.failed" and "/api/login" in r["detail"] for r in records)
    assert any(r["action"] == "http.get" and r["target"] == "/api/tokens" and r["outcome"] == "refused"
               and r["principal"] == f"token {view_id}" for r in records)


def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(http: Http) -> None:
    login = http.url + "/api/login"
    cases = [
        (call(login, "POST", body=b"{not json"), 400),
        (call(login, "POST", body=b"[1, 2]"), 400),
        (call(login, "POST", body=b'{"token": 5}'), 400),
        (call(login, "POST"), 400),
        (call(login, "POST", body=b"x" * (2 << 20)), 413),
        (call(http.url + "/api/nothing-here", token=http.owner), 404),
        (call(http.url + "/api/version", "DELETE"), 405),
        (call(login, "POST", body=json.dumps({"token": "a" * 10_000}).encode()), 401),
    ]
    for reply, status in cases:
        assert reply.status == status, (reply, status)
        assert "error" in reply.json() and "Traceback" not in reply.body.decode()
    # Raw garbage on the socket: the server answers 400 or hangs up, and goes on.
    host, port = http.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        s.recv(1024)
    assert call(http.url + "/api/version").status == 200


def test_tls_on_serves_https_with_the_heads_certificate() -> None:
    import ssl

    with cluster("manta-https-", "--num-cpus", "1", "--dashboard-port", "0", "--tls", "on") as c:
        rec_dir = next(d for d in os.listdir(c.root) if os.path.exists(os.path.join(c.root, d, "cluster.json")))
        with open(os.path.join(c.root, rec_dir, "cluster.json")) as f:
            url = json.load(f)["dashboard_url"]
        assert url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=os.path.join(c.root, rec_dir, "tls", "ca.pem"))
        with urllib.request.urlopen(url + "/api/version", context=ctx, timeout=30) as r:
            assert r.status == 200
        # Plain HTTP to the TLS port gets nothing.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(url.replace("https://", "http://") + "/api/version", timeout=10).read()


def scrape(http: Http) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    r = call(http.url + "/metrics", token=http.view)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(r.body.decode())}


def task_count(families: dict[str, Any], name: str, state: str) -> float:
    return sum(s.value for s in families["manta_tasks"].samples
               if s.labels["State"] == state and s.labels["Name"].endswith(name))


def test_metrics_show_tasks_by_state_nodes_and_a_users_counter(http: Http) -> None:
    before = scrape(http)
    for name in ("manta_tasks", "manta_actors", "manta_resources", "manta_object_store_memory",
                 "manta_node_cpu_utilization", "manta_node_mem_total", "manta_workers", "manta_scheduler_tasks",
                 "manta_object_manager_bytes", "manta_cluster_active_nodes"):
        assert name in before, sorted(before)
    assert task_count(before, "metered", "FINISHED") == 0
    http.c.driver("""
        from manta.util.metrics import Counter

        @manta.remote
        def metered(i):
            Counter("http_test_calls", "Calls of metered.", tag_keys=("kind",)).inc(2, tags={"kind": "task"})
            return i

        @manta.remote
        def broken():
            raise ValueError("no")

        assert manta.get([metered.remote(i) for i in range(5)]) == list(range(5))
        try:
            manta.get(broken.remote())
        except Exception:
            pass
        Counter("http_test_calls", "Calls of metered.", tag_keys=("kind",)).inc(1, tags={"kind": "driver"})
    """)
    deadline = time.monotonic() + 30
    while True:
        after = scrape(http)
        calls = {s.labels["kind"]: s.value for s in after.get("manta_http_test_calls", ()).samples
                 if s.name == "manta_http_test_calls_total"} if "manta_http_test_calls" in after else {}
        if (task_count(after, "metered", "FINISHED") == 5 and task_count(after, "broken", "FAILED") == 1
                and calls.get("task") == 10 and calls.get("driver") == 1):
            break
        assert time.monotonic() < deadline, (calls, [s for s in after["manta_tasks"].samples])
        time.sleep(0.2)
    assert after["manta_http_test_calls"].type == "counter"
    assert {s.labels["JobId"] for s in after["manta_http_test_calls"].samples} != {""}
    nodes = after["manta_cluster_active_nodes"].samples[0].value
    assert nodes == 1
    cpus = {s.labels["State"]: s.value for s in after["manta_resources"].samples if s.labels["Name"] == "CPU"}
    assert cpus["USED"] + cpus["AVAILABLE"] == 2
    mem = after["manta_node_mem_total"].samples[0].value
    assert mem > 0


def test_metrics_history_fills_and_filters_by_time(http: Http) -> None:
    deadline = time.monotonic() + 30
    while True:
        r = call(http.url + "/api/metrics/history", token=http.view)
        assert r.status == 200
        body = r.json()
        if body["samples"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert body["period_s"] > 0 and body["keep_s"] >= 3600
    s = body["samples"][-1]
    assert s["nodes"] == 1 and s["cpus"] == 2 and s["mem_total"] > 0 and s["store_capacity"] > 0
    assert "tasks_finished_per_s" in s and "actors_finished_per_s" in s
    later = call(http.url + f"/api/metrics/history?since={s['time']}", token=http.view).json()
    assert all(x["time"] > s["time"] for x in later["samples"])
    bad = call(http.url + "/api/metrics/history?since=yesterday", token=http.view)
    assert bad.status == 400 and "since" in bad.json()["message"]



def test_the_objects_route_shows_pinned_and_spilled_bytes_of_a_live_driver() -> None:
    # A store of 64 MiB: six 10 MiB objects held pass its spill threshold, and
    # a value read back stays pinned while the driver holds it.
    with cluster("manta-objpage-", "--num-cpus", "1", "--dashboard-port", "0",
                 "--object-store-memory", str(64 << 20)) as c:
        rec_path = next(os.path.join(c.root, d, "cluster.json") for d in os.listdir(c.root)
                        if os.path.exists(os.path.join(c.root, d, "cluster.json")))
        with open(rec_path) as f:
            rec = json.load(f)
        with open(rec["token_file"]) as f:
            owner = f.read().strip()
        script = textwrap.dedent("""
            import sys, manta, numpy as np
            manta.init(address="auto")
            refs = [manta.put(np.full(10 << 20, i, dtype=np.uint8)) for i in range(6)]
            held = manta.get(refs[-1])
            print("HELD", flush=True)
            sys.stdin.read()  # until the test is done looking
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], env=c.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
            deadline = time.monotonic() + 30
            while True:
                (node,) = call(rec["dashboard_url"] + "/api/state/objects", token=owner).json()["nodes"]
                if node.get("spilled_objects", 0) >= 1 and node.get("pinned_bytes", 0) >= 10 << 20:
                    break
                assert time.monotonic() < deadline, node
                time.sleep(0.2)
            assert node["spilled_bytes"] >= 10 << 20 and node["capacity"] == 64 << 20
            owners = call(rec["dashboard_url"] + "/api/state/objects", token=owner).json()["owners"]
            (driver,) = [o for o in owners if o["pid"] == proc.pid]
            assert driver["refs"] >= 6 and driver["bytes"] >= 60 << 20
        finally:
            proc.communicate("", timeout=60)


def test_metrics_count_the_bytes_moved_between_nodes(http: Http) -> None:
    # Last in this module: it adds a second node to the shared cluster. The
    # driver (address="auto") then runs on the newest node; its task on the head's.
    with open(next(os.path.join(http.c.root, d, "cluster.json") for d in os.listdir(http.c.root)
                   if os.path.exists(os.path.join(http.c.root, d, "cluster.json")))) as f:
        rec = json.load(f)
    http.c.cli("start", "--address", http.c.address, "--token-file", rec["token_file"], "--num-cpus", "1")
    http.c.driver("""
        import numpy as np

        ref = manta.put(np.ones(6 << 20, dtype=np.uint8))

        @manta.remote(resources={"node:__internal_head__": 0.01})
        def total(a):
            return int(a.sum())

        assert manta.get(total.remote(ref)) == 6 << 20
    """)
    deadline = time.monotonic() + 30
    while True:
        after = scrape(http)
        moved: dict[str, float] = {}
        for s in after["manta_object_manager_bytes"].samples:
            if s.name == "manta_object_manager_bytes_total":
                moved[s.labels["Type"]] = moved.get(s.labels["Type"], 0.0) + s.value
        if moved.get("Received", 0) >= 6 << 20 and moved.get("Sent", 0) >= 6 << 20:
            break
        assert time.monotonic() < deadline, moved
        time.sleep(0.2)
    assert after["manta_cluster_active_nodes"].samples[0].value == 2
