"""runtime_env `working_dir`: a local directory, zipped and shipped through
the cluster, unpacked where its tasks run.

- The driver zips the directory (skipping `excludes`, gitignore-style
  patterns, and `.git`), refuses one past `MAX_BYTES` with a clear error,
  and stores it in the head's KV under its content hash, once.
- A task's environment names the hash (`WORKING_DIR_ENV`). Workers are
  pooled by environment, so a worker serves one working dir: the first task
  fetches the zip into the node's cache (by hash, shared by its jobs) and
  unpacks it once per job; the worker then runs in that copy (its current
  directory, and first on sys.path), as Ray's workers do.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import sys
import zipfile
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private.protocol import messages as m

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime

WORKING_DIR_ENV = "MANTA_WORKING_DIR_PKG"
KV_NAMESPACE = "_manta_packages"
MAX_BYTES = 100 * 1024 * 1024  # Ray's limit for a working_dir package


def _excluded(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style: a pattern with a slash at its start or in its middle
    matches the path from the top, one without matches the name at any
    depth; a trailing slash matches directories only (and their contents)."""
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        want_dir = pat.endswith("/")
        anchored = "/" in pat.rstrip("/")  # a slash at the start or in the middle
        p = pat.strip("/")
        if not p or (want_dir and not is_dir):
            continue
        if fnmatch.fnmatch(rel if anchored else name, p):
            return True
    return False


def pack_dir(path: str, excludes: list[str] | None = None) -> bytes:
    """The directory as zip bytes (ValueError if missing or too large)."""
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise ValueError(f"runtime_env working_dir {path!r} is not a directory")
    patterns = [".git/", *(excludes or [])]
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = sorted(d for d in dirnames if not _excluded(rel_dir + d, True, patterns))
            for name in sorted(filenames):
                rel = rel_dir + name
                full = os.path.join(dirpath, name)
                if _excluded(rel, False, patterns) or not os.path.isfile(full):
                    continue
                total += os.path.getsize(full)
                if total > MAX_BYTES:
                    raise ValueError(
                        f"runtime_env working_dir {path!r} is over {MAX_BYTES // 2**20} MiB; leave out what "
                        f"tasks do not need with runtime_env['excludes'] (gitignore-style patterns)"
                    )
                # A fixed time stamp: the same files give the same package.
                info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                with open(full, "rb") as f:
                    zf.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def upload_working_dir(rt: CoreRuntime, runtime_env: dict[str, Any]) -> str:
    """Packs and uploads the runtime_env's working_dir, once per runtime (as
    Ray does per job: later edits are not seen); returns its hash."""
    excludes = list(runtime_env.get("excludes") or [])
    key = (os.path.abspath(os.path.expanduser(str(runtime_env["working_dir"]))), tuple(excludes))
    digest = rt.packages.get(key)
    if digest is None:
        data = pack_dir(key[0], excludes)
        digest = hashlib.sha256(data).hexdigest()
        rt.call_head(m.KvPut(namespace=KV_NAMESPACE, key=digest.encode(), value=data, overwrite=False))
        rt.packages[key] = digest
    return digest


def enter_working_dir(rt: CoreRuntime, digest: str, job_id: int) -> str:
    """Worker: the job's copy of the package, fetched and unpacked if this
    node has not yet; the process moves into it."""
    base = os.path.join(rt.session.session_dir, "runtime_resources", "working_dir")
    job_dir = os.path.join(base, f"job_{job_id}_{digest[:16]}")
    if not os.path.isdir(job_dir):
        cached = os.path.join(base, f"{digest}.zip")
        if not os.path.exists(cached):
            data = rt.call_head(m.KvGet(namespace=KV_NAMESPACE, key=digest.encode())).value
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                raise exc.RuntimeEnvSetupError(f"the working_dir package {digest} is missing or corrupt")
            os.makedirs(base, mode=0o700, exist_ok=True)
            tmp = f"{cached}.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, cached)
        staging = f"{job_dir}.{os.getpid()}"
        with zipfile.ZipFile(cached) as zf:
            zf.extractall(staging)
        try:
            os.rename(staging, job_dir)
        except OSError:  # another worker of the job unpacked it first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    os.chdir(job_dir)
    if job_dir not in sys.path:
        sys.path.insert(0, job_dir)
    return job_dir
