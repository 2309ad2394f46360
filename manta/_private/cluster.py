"""Long-lived clusters: `manta start`, `manta stop`, `manta status`, `init(address=...)`.

Every node started on a machine leaves a record, `cluster.json`, in its
session directory (mode 0700): its role, the head's address, the local
agent's socket, the token file and the PIDs it started. Drivers on the
machine find their node through these records, and `manta stop` stops
exactly the processes a record lists (after checking each PID still belongs
to that session), never anything found by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from manta._private import cmdline, ids, services
from manta._private.auth.credentials import looks_like_person_token, owner_credential, parse_token
from manta._private.config import Config
from manta._private.private_files import UnsafePath, check_dir, problem
from manta._private.protocol.identity import Credential
from manta._private.version import VERSION

if TYPE_CHECKING:
    from manta._private.head.storage import RedisTarget

RECORD = "cluster.json"
# Ray's dashboard port: the head's HTTP server's unless told otherwise.
DEFAULT_DASHBOARD_PORT = 8265


class ClusterError(RuntimeError):
    """A cluster command could not do what was asked; the message says why."""


@dataclass
class NodeRecord:
    session_dir: str
    role: str  # head | node
    head_address: str  # tcp:HOST:PORT, what other machines use
    agent_address: str  # unix socket of this machine's agent
    token_file: str
    pids: list[int] = field(default_factory=list)
    head_local: str = ""  # the head's unix socket, on the head's machine
    created: float = 0.0
    node_ip: str = ""  # this node's address: every process here listens on it
    storage: str = ""  # the head's storage URL, never with a password ("" = in memory)
    restarts: int = 0  # times its head was restarted in this session
    version: str = VERSION  # the manta that started it: a driver must match
    dashboard_url: str = ""  # the head's HTTP server (dashboard, /metrics, REST); "" = none

    @property
    def public_address(self) -> str:
        return self.head_address.partition(":")[2]

    def alive(self) -> bool:
        return any(_owned_by(pid, self.session_dir) for pid in self.pids)


def _owned_by(pid: int, session_dir: str) -> bool:
    """Whether `pid` is still a service this session started (not a reused
    PID, nor another user's process): ours, and its command line names this
    session directory exactly."""
    try:
        if pid <= 0 or os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, TypeError):
        return False
    return is_service_of([os.fsdecode(a) for a in raw.split(b"\0")[:-1]], session_dir)


def is_service_of(argv: list[str], session_dir: str) -> bool:
    """Whether a command line is one of manta's services started for
    `session_dir`: `python -m <service main> ... --session-dir <session_dir>`,
    compared whole (a substring would match any process that merely
    mentions the path, or a longer path that begins with it)."""
    if len(argv) < 3 or argv[1] != "-m" or argv[2] not in services.SERVICE_MAINS.values():
        return False
    given = [argv[i + 1] for i in range(3, len(argv) - 1) if argv[i] == "--session-dir"]
    return given == [session_dir]


def write_record(rec: NodeRecord) -> None:
    path = os.path.join(rec.session_dir, RECORD)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(rec), f)
    os.replace(tmp, path)


def _session_root() -> str:
    try:
        return services.session_root()
    except UnsafePath as e:
        raise ClusterError(str(e)) from None


def _new_session_dir() -> str:
    _session_root()  # its error, as a ClusterError
    return services.new_session_dir()


def load_records(refused: list[str] | None = None) -> list[NodeRecord]:
    """This user's node records, oldest first. A record is trusted only when
    it and its session directory are the user's own, writable by no one
    else, and it names the directory it is in; any other is left out (and
    said in `refused`): a driver never connects by it, and stop never acts
    on it."""
    root = _session_root()
    out = []
    for name in sorted(os.listdir(root)):
        rec, why = _read_record(os.path.join(root, name))
        if why is not None and refused is not None:
            refused.append(f"{os.path.join(root, name, RECORD)}: {why}")
        if rec is not None:
            out.append(rec)
    out.sort(key=lambda r: r.created)
    return out


def _read_record(session_dir: str) -> tuple[NodeRecord | None, str | None]:
    """The record in `session_dir`, or why it is not trusted (both None:
    there is none, as in the sessions of init() without an address)."""
    path = os.path.join(session_dir, RECORD)
    if not os.path.lexists(path):
        return None, None
    why = problem(os.lstat(session_dir), os.geteuid(), directory=True)
    if why is not None:
        return None, f"its session directory {why}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        return None, "is a symbolic link" if os.path.islink(path) else f"cannot be read ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        why = problem(os.fstat(f.fileno()), os.geteuid(), directory=False)
        if why is not None:
            return None, why
        try:
            rec = NodeRecord(**json.loads(f.read(1 << 20)))
        except (OSError, ValueError, TypeError):
            return None, "is not a cluster record"
    why = record_problem(rec, os.path.realpath(session_dir), os.path.realpath)
    return (None, why) if why is not None else (rec, None)


def record_problem(rec: NodeRecord, session_dir: str, resolve: Callable[[str], str]) -> str | None:
    """What is wrong with a record found in `session_dir` (a resolved path),
    or None. It must name that directory and a token file in it, and list
    only PIDs (a 0 or -1 would make kill() signal a group, or everyone)."""
    if not isinstance(rec.session_dir, str) or resolve(rec.session_dir) != session_dir:
        return f"names the session directory {rec.session_dir!r}, not the one it is in"
    if not isinstance(rec.token_file, str) or os.path.dirname(resolve(rec.token_file)) != session_dir:
        return f"names the token file {rec.token_file!r}, outside its session directory"
    if not isinstance(rec.pids, list) or not all(type(p) is int and p > 0 for p in rec.pids):
        return f"lists {rec.pids!r} as its processes"
    return None


def normalize_address(address: str) -> str:
    """'HOST:PORT' (or 'tcp:HOST:PORT') -> 'tcp:IP:PORT'."""
    if address.startswith("tcp:"):
        address = address[4:]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"bad address {address!r}: expected HOST:PORT")
    try:
        ip = socket.gethostbyname(host.strip("[]"))
    except OSError as e:
        raise ClusterError(f"cannot resolve {host!r}: {e}") from None
    return f"tcp:{ip}:{port}"


def _token_text(token_file: str | None) -> tuple[str, str] | None:
    """The token given, and where: MANTA_TOKEN, else --token-file, else Ray's token
    authentication variables (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), so scripts
    written for `ray start` with a token join the same way."""
    sources = [
        ("MANTA_TOKEN", os.environ.get("MANTA_TOKEN"), False),
        (token_file, token_file, True),
        ("RAY_AUTH_TOKEN", os.environ.get("RAY_AUTH_TOKEN"), False),
        ("RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH"), True),
    ]
    for where, value, is_path in sources:
        if not value:
            continue
        if not is_path:
            return value, where or ""
        try:
            with open(value) as f:
                return f.read(), value
        except OSError as e:
            raise ClusterError(f"cannot read the token file {where}: {e}") from None
    return None


def token_from_env_or_file(token_file: str | None) -> bytes | None:
    """The cluster token given, for a node to join with (a person's token is not one)."""
    given = _token_text(token_file)
    if given is None:
        return None
    text, where = given
    if looks_like_person_token(text):
        raise ClusterError(
            f"{where} holds a person's token (mt1.…): a node joins with the cluster token, "
            f"which `manta start --head` wrote to its session directory"
        )
    return parse_token(text)


def credential_from_env_or_file(token_file: str | None) -> Credential | None:
    """What a driver or CLI call presents: a person's token as given, or the
    cluster owner's token derived from the cluster token."""
    given = _token_text(token_file)
    if given is None:
        return None
    text, _ = given
    if looks_like_person_token(text):
        return Credential(token=text.strip())
    return owner_credential(parse_token(text))


def _wait_ready(fds: dict[int, str], procs: list, session_dir: str, keep_session: bool = False) -> dict[str, str]:
    try:
        return services._await_ready(fds, procs, session_dir, 60, keep_session)
    except RuntimeError as e:
        text = str(e)
        if "wrong cluster token" in text or "authentication" in text:
            raise ClusterError(
                "the head refused this node: wrong cluster token (give the head's token "
                "with --token-file or MANTA_TOKEN)"
            ) from None
        raise ClusterError(text) from None


def start_head(
    *,
    host: str,
    port: int,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    token: bytes | None,
    storage: str = "",
    redis_password: str | None = None,
    redis_ca: str | None = None,
    config: Config = Config(),
    audit_log: str = "",
    tls_files: tuple[str, str, str] | None = None,
    dashboard: tuple[str, int | None] | None = None,
    head_ca: tuple[str, str] | None = None,
    memory: int | None = None,
) -> NodeRecord:
    """Starts a head and its node; with `storage`, first looks for a head of
    this address that died while its node lives on, and restarts just it.
    `audit_log`: where the head writes its audit trail (default: the session's audit.log).
    `dashboard`: (host, port) of its HTTP server (port 0: any free one; None: 8265, or any free
    one if that is taken), None for none.
    `head_ca`: (CA certificate, CA key) files to sign nodes' certificates with.
    `memory`: the node's `memory` resource in bytes (default: 70% of the machine's)."""
    target = _check_storage(storage, redis_password, redis_ca, config) if storage else None
    if target is not None and port:
        prior = _dead_head(normalize_address(f"{host}:{port}"))
        if prior is not None:
            return _restart_head(prior, target, token, config, dashboard)
    session_dir = _new_session_dir()
    token_file = services.write_token(session_dir, token or ids.new_token())
    res, store = services.node_resources(
        num_cpus, num_gpus, resources, object_store_memory, head=True, ip=_ip_of(host), memory=memory
    )
    fingerprint = _head_tls(session_dir, host, config, tls_files, head_ca)
    head_local = f"unix:{session_dir}/head.sock"
    head, head_fd = _spawn_head(session_dir, token_file, [head_local, f"tcp:{host}:{port}"], target, config,
                                audit_log, dashboard)
    ip = _ip_of(host)
    agent, agent_fd = services._spawn(
        services.agent_args(session_dir, token_file, head_local, res, store, ip, config),
        session_dir, "agent.log", detached=True,
    )
    ready = _wait_ready({head_fd: "head", agent_fd: "agent"}, [head, agent], session_dir)
    tcp = next(a for a in ready["head"].split()[1:] if a.startswith("tcp:"))
    rec = NodeRecord(
        session_dir, "head", tcp, f"unix:{session_dir}/agent.sock", token_file,
        [head.pid, agent.pid], head_local, time.time(), ip, target.url if target else "",
        dashboard_url=_http_url(ready["head"]),
    )
    write_record(rec)
    if fingerprint:
        log_tls(f"TLS on: cluster CA {fingerprint}")
    return rec


def _http_url(ready: str) -> str:
    """The HTTP server's URL in the head's READY line ("" if it serves none)."""
    return next((a for a in ready.split()[1:] if a.startswith(("http://", "https://"))), "")


def log_tls(line: str) -> None:
    print(f"manta: {line}", file=sys.stderr)


def _head_tls(session_dir: str, host: str, config: Config, tls_files: tuple[str, str, str] | None,
              head_ca: tuple[str, str] | None = None) -> str:
    """Makes the head's TLS files when TLS is on; returns the CA's fingerprint ("" when off).
    `head_ca`: the paths of a CA certificate and key for the head to sign with."""
    from manta._private.transport import tls_setup

    if not (tls_files or head_ca or tls_setup.tls_wanted(config.tls, [host])):
        return ""
    try:
        if tls_files:
            return tls_setup.bring_own(session_dir, *tls_files)
        given = tls_setup.read_ca(*head_ca) if head_ca else None
        return tls_setup.make_head_ca(session_dir, config.tls_cert_days, (_ip_of(host), host), given)
    except ValueError as e:
        shutil.rmtree(session_dir, ignore_errors=True)
        raise ClusterError(str(e)) from None


def _join_tls(session_dir: str, head_address: str, host: str, token: bytes, config: Config, ca_hash: str,
              tls_files: tuple[str, str, str] | None) -> None:
    from manta._private.transport import tls_setup
    from manta._private.transport.connection import AuthRejected

    head_host = head_address.split(":")[1] if head_address.startswith("tcp:") else ""
    if not (tls_files or ca_hash or tls_setup.tls_wanted(config.tls, [host, head_host])):
        return
    try:
        if tls_files:
            tls_setup.bring_own(session_dir, *tls_files)
            return
        fp = asyncio.run(tls_setup.join_head(head_address, token, session_dir, ca_hash, (_ip_of(host), host)))
    except (TimeoutError, ValueError, OSError, AuthRejected) as e:
        shutil.rmtree(session_dir, ignore_errors=True)
        raise ClusterError(f"TLS: cannot get this node a certificate from {head_address}: {e}") from None
    if not ca_hash:
        log_tls(f"TLS on: the head's CA is {fp} (pass --ca-hash {fp} to pin it on the next joins)")


def _check_storage(url: str, password: str | None, ca: str | None, config: Config) -> RedisTarget:
    """Fails fast, with the reason, on a storage the head could not use."""
    # Imported here: the storage's crypto and Redis are for heads with storage only.
    from manta._private.head.storage import RedisTarget, StorageError, open_storage

    try:
        target = RedisTarget.parse(url, password, ca)
        if target.password is not None:
            hide_from_argv(target.password)  # as it was given in the URL
        open_storage(url, password=password, ca=ca, encrypt=config.storage_encryption).close()
    except StorageError as e:
        raise ClusterError(str(e)) from None
    return target


def _spawn_head(
    session_dir: str, token_file: str, listen: list[str], target: RedisTarget | None, config: Config,
    audit_log: str = "", dashboard: tuple[str, int | None] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    args = ["head", "--session-dir", session_dir, "--token-file", token_file, "--config", config.to_json()]
    if audit_log:
        args += ["--audit-log", os.path.abspath(audit_log)]
    if dashboard is not None:
        host, port = dashboard
        args += ["--dashboard-host", host, "--dashboard-port", str(DEFAULT_DASHBOARD_PORT if port is None else port)]
        if port is None:
            args.append("--dashboard-port-fallback")
    for address in listen:
        args += ["--listen", address]
    fds: tuple[int, ...] = ()
    if target is not None:
        args += ["--storage", target.url]  # the URL without its password
        if target.ca:
            args += ["--redis-ca", target.ca]
        if target.password is not None:
            fds = (_secret_pipe(target.password),)
            args += ["--redis-password-fd", str(fds[0])]
    try:
        return services._spawn(args, session_dir, "head.log", detached=True, pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)


def _secret_pipe(secret: str) -> int:
    """A pipe's read end holding `secret`, for a child to inherit and read once."""
    data = secret.encode()
    if len(data) >= 65536:  # what a pipe holds without a reader
        raise ClusterError("the Redis password is over 64 KiB")
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r


def redis_password(password_file: str | None, password: str | None) -> str | None:
    """The Redis password given: --redis-password-file, else Ray's --redis-password
    (hidden from this process's command line at once), else MANTA_REDIS_PASSWORD."""
    if password_file and password is not None:
        raise ClusterError("give the Redis password once: --redis-password-file or --redis-password, not both")
    if password is not None:
        hide_from_argv(password)
        return password
    if password_file:
        try:
            with open(password_file) as f:
                text = f.read().rstrip("\r\n")
        except OSError as e:
            raise ClusterError(f"cannot read the Redis password file {password_file}: {e.strerror}") from None
        if not text:
            raise ClusterError(f"the Redis password file {password_file} is empty")
        return text
    return os.environ.get("MANTA_REDIS_PASSWORD") or None


def hide_from_argv(secret: str) -> bool:
    """Overwrites `secret` in this process's command line as others see it
    (/proc/self/cmdline, `ps`); False where that cannot be done."""
    needle = secret.encode()
    if not needle:
        return False
    return cmdline.rewrite(lambda args: args.replace(needle, b"*" * len(needle)))


def _dead_head(address: str) -> NodeRecord | None:
    """This machine's head record at `address` whose head died but whose agent lives."""
    for rec in load_records():
        if rec.role == "head" and rec.head_address == address and rec.pids:
            head_pid, others = rec.pids[0], rec.pids[1:]
            if not _owned_by(head_pid, rec.session_dir) and any(_owned_by(p, rec.session_dir) for p in others):
                return rec
    return None


def _restart_head(rec: NodeRecord, target: RedisTarget, token: bytes | None, config: Config,
                  dashboard: tuple[str, int | None] | None = None) -> NodeRecord:
    if token is not None and token != services.read_token(rec.token_file):
        raise ClusterError(
            f"the head at {rec.public_address} is being restarted in its old session, whose "
            f"token differs from the one given: leave out --token-file/MANTA_TOKEN"
        )
    if dashboard is not None and not dashboard[1] and rec.dashboard_url:
        # Back on the port it had, so bookmarks and scrapers find it again.
        dashboard = (dashboard[0], int(rec.dashboard_url.rpartition(":")[2]))
    head, head_fd = _spawn_head(rec.session_dir, rec.token_file, [rec.head_local, rec.head_address], target, config,
                                dashboard=dashboard)
    ready = _wait_ready({head_fd: "head"}, [head], rec.session_dir, keep_session=True)
    tcp = next(a for a in ready["head"].split()[1:] if a.startswith("tcp:"))
    rec.dashboard_url = _http_url(ready["head"])
    rec.pids[0] = head.pid
    rec.head_address = tcp
    rec.storage = target.url
    rec.restarts += 1
    write_record(rec)
    return rec


def join(
    address: str,
    *,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    token: bytes,
    host: str = "127.0.0.1",
    config: Config = Config(),
    ca_hash: str = "",
    tls_files: tuple[str, str, str] | None = None,
    memory: int | None = None,
) -> NodeRecord:
    head_address = normalize_address(address)
    session_dir = _new_session_dir()
    token_file = services.write_token(session_dir, token)
    _join_tls(session_dir, head_address, host, token, config, ca_hash, tls_files)
    res, store = services.node_resources(
        num_cpus, num_gpus, resources, object_store_memory, head=False, ip=_ip_of(host), memory=memory
    )
    ip = _ip_of(host)
    agent, agent_fd = services._spawn(
        services.agent_args(session_dir, token_file, head_address, res, store, ip, config),
        session_dir, "agent.log", detached=True,
    )
    try:
        _wait_ready({agent_fd: "agent"}, [agent], session_dir)
    except ClusterError:
        shutil.rmtree(session_dir, ignore_errors=True)
        raise
    rec = NodeRecord(
        session_dir, "node", head_address, f"unix:{session_dir}/agent.sock", token_file,
        [agent.pid], "", time.time(), ip,
    )
    write_record(rec)
    return rec


def _ip_of(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def find_local_node(address: str | None) -> NodeRecord:
    """The record of the node on this machine that a driver should use:
    only this user's trusted records count, so `init("auto")` never joins
    another user's cluster."""
    refused: list[str] = []
    records = [r for r in load_records(refused) if r.alive()]
    untrusted = f" (records left out as not trusted: {'; '.join(refused)})" if refused else ""
    if address in (None, "auto"):
        if not records:
            raise ClusterError(
                "no manta cluster is running on this machine: start one with "
                f"`manta start --head`, or call init() without an address{untrusted}"
            )
        return records[-1]
    wanted = normalize_address(address)
    matching = [r for r in records if r.head_address == wanted]
    if not matching:
        raise ClusterError(
            f"no manta node on this machine belongs to the cluster at {address}: join it "
            f"first with `manta start --address {address}`{untrusted}"
        )
    # Prefer the head's own node: it is the one `manta start --head` made.
    matching.sort(key=lambda r: (r.role != "head", r.created))
    return matching[0]


def stop(address: str | None, refused: list[str] | None = None) -> list[NodeRecord]:
    """Stops this machine's nodes (of one cluster, given its address); returns
    them. Records not trusted are left alone and said in `refused`."""
    wanted = normalize_address(address) if address else None
    stopped = []
    for rec in load_records(refused):
        if wanted is not None and rec.head_address != wanted:
            continue
        _stop_record(rec)
        stopped.append(rec)
    return stopped


def _stop_record(rec: NodeRecord, timeout: float = 10.0) -> None:
    # Agents first: each takes its own workers and fork server down with it.
    order = sorted(rec.pids, key=lambda p: 0 if p != rec.pids[0] or rec.role == "node" else 1)
    for pid in order:
        if _owned_by(pid, rec.session_dir):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for pid in order:
        while _owned_by(pid, rec.session_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _owned_by(pid, rec.session_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _remove_session_dir(rec.session_dir)


def _remove_session_dir(session_dir: str) -> None:
    """Removes a session directory, only once it is verified to be one: a
    directory of this user's, directly under the verified session root."""
    root = os.path.realpath(_session_root())
    path = os.path.abspath(session_dir)
    if not os.path.lexists(path):
        return
    if os.path.dirname(os.path.realpath(path)) != root or os.path.realpath(path) == root:
        raise ClusterError(f"stopped its processes but left {session_dir}: it is not under the session root {root}")
    try:
        check_dir(path, "session directory")
    except UnsafePath as e:
        raise ClusterError(f"stopped its processes but left it: {e}") from None
    shutil.rmtree(path, ignore_errors=True)
