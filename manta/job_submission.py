"""Ray's `ray.job_submission`: submit jobs to a cluster's head over its REST API.

    from manta.job_submission import JobSubmissionClient, JobStatus
    client = JobSubmissionClient("http://127.0.0.1:8265")
    sid = client.submit_job(entrypoint="python script.py", runtime_env={"working_dir": "./"})
    client.get_job_status(sid)            # JobStatus.RUNNING, ... JobStatus.SUCCEEDED
    async for lines in client.tail_job_logs(sid): print(lines, end="")

The address is the head's dashboard URL (`manta start --head --dashboard-port`,
default 8265), else RAY_ADDRESS or MANTA_ADDRESS when they hold an http(s)
URL, else this machine's cluster's (its record says where), else
http://127.0.0.1:8265. Requests carry the caller's token as a
bearer token: MANTA_TOKEN, else `token_file`, else this machine's cluster
owner's token. A local working_dir (or one given by the CLI's --working-dir)
is zipped and uploaded first, once per content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from manta._private.head.jobs.table import JobStatus
from manta.util.state import DriverInfo

__all__ = ["DriverInfo", "JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient", "JobType"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


class JobType:
    SUBMISSION = "SUBMISSION"
    DRIVER = "DRIVER"


@dataclass
class JobInfo:
    """A job's status and settings (Ray's JobInfo)."""

    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None


@dataclass
class JobDetails(JobInfo):
    """What the REST API returns of a job (Ray's JobDetails)."""

    type: str = JobType.SUBMISSION
    job_id: str | None = None
    submission_id: str | None = None
    driver_info: DriverInfo | None = None
    namespace: str = ""  # manta's: where the job's driver runs
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> JobDetails:
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        given["status"] = JobStatus(given["status"])
        info = given.get("driver_info")
        if isinstance(info, dict):
            given["driver_info"] = DriverInfo(**{k: str(v) for k, v in info.items() if k in ("id", "node_ip_address",
                                                                                           "pid")})
        return cls(**given, extra={k: v for k, v in data.items() if k not in known})


def _address(address: str | None) -> str:
    if not address:
        for var in ("RAY_ADDRESS", "MANTA_ADDRESS"):
            value = os.environ.get(var, "")
            if value.startswith(("http://", "https://")):
                address = value
                break
    if not address:  # this machine's cluster, if it has one with an HTTP server
        from manta._private import cluster

        try:
            address = cluster.find_local_node(None).dashboard_url
        except cluster.ClusterError:
            pass
    address = address or DEFAULT_ADDRESS
    if "://" not in address:
        address = "http://" + address
    return address.rstrip("/")


def _token(token_file: str | None) -> str | None:
    """The caller's token: MANTA_TOKEN, the file given, else this machine's cluster owner's."""
    from manta._private import cluster

    try:
        credential = cluster.credential_from_env_or_file(token_file)
        if credential is None:
            rec = cluster.find_local_node(None)
            credential = cluster.credential_from_env_or_file(rec.token_file)
    except cluster.ClusterError:
        return None
    return credential.token if credential is not None else None


def _local_ca(address: str) -> str | None:
    """The CA of this machine's cluster whose HTTP server is at `address`, if it is one
    (its certificates are the cluster's own, not the system's)."""
    from manta._private import cluster

    for rec in cluster.load_records():
        ca = os.path.join(rec.session_dir, "tls", "ca.pem")
        if rec.dashboard_url.rstrip("/") == address and os.path.exists(ca):
            return ca
    return None


class JobSubmissionClient:
    def __init__(
        self,
        address: str | None = None,
        create_cluster_if_needed: bool = False,
        cookies: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        verify: str | bool | None = True,
        *,
        token_file: str | None = None,
    ) -> None:
        if create_cluster_if_needed:
            raise ValueError("create_cluster_if_needed is not supported: start the cluster with `manta start --head`")
        self.address = _address(address)
        self._default_metadata = dict(metadata or {})
        self._cookies = dict(cookies or {})
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if not any(k.lower() == "authorization" for k in self._headers):
            token = _token(token_file)
            if token:
                self._headers["Authorization"] = f"Bearer {token}"
        if self._cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        self._ssl: ssl.SSLContext | None = None
        if self.address.startswith("https://"):
            if verify is False:
                self._ssl = ssl._create_unverified_context()  # noqa: S323 - the caller asked for it
            elif isinstance(verify, str):
                self._ssl = ssl.create_default_context(cafile=verify)
            else:
                self._ssl = ssl.create_default_context(cafile=_local_ca(self.address))
        self._version()

    # -- HTTP ---------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, data: bytes | None = None,
                 ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.address + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self._ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except urllib.error.URLError as e:
            raise ConnectionError(f"Failed to connect to the job server at {self.address}: {e.reason}") from None
        if status not in ok:
            try:
                said = json.loads(raw)
                said = said.get("message") or said.get("error") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                said = raw.decode(errors="replace")
            raise RuntimeError(f"Request failed with status code {status}: {said}")
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def _version(self) -> None:
        try:
            self._request("GET", "/api/version")
        except RuntimeError:
            pass  # reachable: the routes below say what is wrong, if anything

    # -- packages -----------------------------------------------------------

    def _upload_working_dir(self, runtime_env: dict[str, Any]) -> dict[str, Any]:
        wd = runtime_env.get("working_dir")
        if not wd or "://" in str(wd):
            return runtime_env
        from manta._private.runtime.packaging import pack_dir

        data = pack_dir(str(wd), list(runtime_env.get("excludes") or []))
        name = f"_manta_pkg_{hashlib.sha256(data).hexdigest()}.zip"
        status, _ = self._request("GET", f"/api/packages/manta/{name}", ok=(200, 404))
        if status == 404:
            self._request("PUT", f"/api/packages/manta/{name}", data=data)
        out = {k: v for k, v in runtime_env.items() if k != "excludes"}
        out["working_dir"] = f"manta://{name}"
        return out

    # -- Ray's methods ------------------------------------------------------

    def submit_job(
        self,
        *,
        entrypoint: str,
        job_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        submission_id: str | None = None,
        entrypoint_num_cpus: int | float | None = None,
        entrypoint_num_gpus: int | float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        namespace: str | None = None,
    ) -> str:
        """Submits the job; returns its submission id."""
        if job_id and submission_id and job_id != submission_id:
            raise ValueError("job_id (deprecated) and submission_id must be the same when both are given")
        body: dict[str, Any] = {"entrypoint": entrypoint,
                                "runtime_env": self._upload_working_dir(dict(runtime_env or {})),
                                "metadata": {**self._default_metadata, **(metadata or {})}}
        for name, value in (("submission_id", submission_id or job_id), ("entrypoint_num_cpus", entrypoint_num_cpus),
                            ("entrypoint_num_gpus", entrypoint_num_gpus), ("entrypoint_memory", entrypoint_memory),
                            ("entrypoint_resources", entrypoint_resources), ("namespace", namespace)):
            if value is not None:
                body[name] = value
        _, out = self._request("POST", "/api/jobs/", body)
        return str(out["submission_id"])

    def stop_job(self, job_id: str) -> bool:
        return bool(self._request("POST", f"/api/jobs/{_q(job_id)}/stop")[1]["stopped"])

    def delete_job(self, job_id: str) -> bool:
        return bool(self._request("DELETE", f"/api/jobs/{_q(job_id)}")[1]["deleted"])

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.of(self._request("GET", f"/api/jobs/{_q(job_id)}")[1])

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.of(d) for d in self._request("GET", "/api/jobs/")[1]]

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        return str(self._request("GET", f"/api/jobs/{_q(job_id)}/logs")[1]["logs"])

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's log as it is written, from its start, until the job ends."""
        import aiohttp

        url = self.address.replace("http", "ws", 1) + f"/api/jobs/{_q(job_id)}/logs/tail"
        headers = {k: v for k, v in self._headers.items() if k.lower() != "cookie"}
        async with aiohttp.ClientSession(cookies=self._cookies, headers=headers) as session:
            try:
                ws = await session.ws_connect(url, ssl=self._ssl if self._ssl is not None else True)
            except aiohttp.WSServerHandshakeError as e:
                raise RuntimeError(f"Request failed with status code {e.status}: {e.message}") from None
            async with ws:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        yield msg.data
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break


def _q(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")
