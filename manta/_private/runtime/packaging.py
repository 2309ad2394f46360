"""runtime_env packages: `working_dir` and `py_modules` shipped through the
cluster and unpacked where their tasks run, and `pip` environments named.

- The driver zips a directory (skipping `excludes`, gitignore-style
  patterns, and `.git`), refuses one past `MAX_BYTES` with a clear error,
  and stores it in the head's KV under its content hash, once. A `.whl`
  in `py_modules` is stored as it is.
- A task's environment names the hashes and the pip spec
  (`protocol/runtime_env.py`). Workers are pooled by environment, so a
  worker serves one runtime_env: the first task fetches each package into
  the node's cache (by hash, shared by its jobs); the worker then runs in
  the job's copy of its working_dir (its current directory, and first on
  sys.path, as Ray's workers do) with its py_modules importable. The node
  agent builds the pip environment before it starts such a worker.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import sys
import time
import types
import zipfile
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm
from manta._private.protocol.runtime_env import (
    DEFAULT_SETUP_TIMEOUT_S,
    PIP_ENV,
    PY_MODULES_ENV,
    RESERVED_VARS,
    WORKING_DIR_ENV,
    PipSpec,
    decode_pip,
    encode_pip,
)

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime

KV_NAMESPACE = "_manta_packages"
MAX_BYTES = 100 * 1024 * 1024  # Ray's limit for a package
# The fields that name packages or environments (each looked up per call).
PACKAGE_FIELDS = ("working_dir", "py_modules", "pip")
_PIP_KEYS = {"packages", "pip_check", "pip_version", "pip_install_options"}
_CONFIG_KEYS = {"setup_timeout_seconds", "eager_install", "log_files"}


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


def pack_dir(path: str, excludes: list[str] | None = None, field: str = "working_dir", prefix: str = "") -> bytes:
    """The directory as zip bytes, its paths under `prefix` (ValueError if
    it is missing or too large)."""
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise ValueError(f"runtime_env {field} {path!r} is not a directory")
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
                        f"runtime_env {field} {path!r} is over {MAX_BYTES // 2**20} MiB; leave out what "
                        f"tasks do not need with runtime_env['excludes'] (gitignore-style patterns)"
                    )
                # A fixed time stamp: the same files give the same package.
                info = zipfile.ZipInfo(prefix + rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                with open(full, "rb") as f:
                    zf.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def check_runtime_env(runtime_env: Any) -> None:
    """Ray's checks of a runtime_env's shape, made where it is given."""
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
    for k, v in (runtime_env.get("env_vars") or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"runtime_env env_vars must map str to str, got {k!r}: {v!r}")
        if k in RESERVED_VARS:
            raise ValueError(f"runtime_env env_vars may not set {k}: manta names the runtime_env's packages with it")
    if runtime_env.get("pip") and runtime_env.get("conda"):
        raise ValueError("the 'pip' field and the 'conda' field of runtime_env cannot both be given")
    pip = runtime_env.get("pip")
    if pip is not None and not isinstance(pip, (str, list, dict)):
        raise TypeError(f"runtime_env pip must be a list of requirements, a requirements file or a dict, "
                        f"got {type(pip).__name__}")
    if isinstance(pip, dict) and set(pip) - _PIP_KEYS:
        raise ValueError(f"unknown runtime_env pip key(s) {sorted(set(pip) - _PIP_KEYS)}; "
                         f"it takes {sorted(_PIP_KEYS)}")
    mods = runtime_env.get("py_modules")
    if mods is not None and not isinstance(mods, list):
        raise TypeError(f"runtime_env py_modules must be a list, got {type(mods).__name__}")
    setup_timeout(runtime_env.get("config"))


def setup_timeout(config: Any) -> float | None:
    """The config's `setup_timeout_seconds` (Ray's rules: an int > 0, or -1 for none)."""
    if config is None:
        return DEFAULT_SETUP_TIMEOUT_S
    if hasattr(config, "to_dict"):  # a RuntimeEnvConfig
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"runtime_env config must be a dict or a RuntimeEnvConfig, got {type(config).__name__}")
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown runtime_env config key(s) {sorted(unknown)}; it takes {sorted(_CONFIG_KEYS)}")
    t = config.get("setup_timeout_seconds", int(DEFAULT_SETUP_TIMEOUT_S))
    if not isinstance(t, int) or isinstance(t, bool) or not (t > 0 or t == -1):
        raise ValueError(f"setup_timeout_seconds must be an int > 0, or -1 for no timeout, got {t!r}")
    if not isinstance(config.get("eager_install", True), bool):
        raise TypeError(f"eager_install must be a bool, got {config['eager_install']!r}")
    return None if t == -1 else float(t)


def _requirements(path: str) -> list[str]:
    """A requirements file's lines, read where the driver runs (as Ray does)."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ValueError(f"runtime_env pip {path!r} is neither a list of requirements nor an existing requirements file")
    with open(full) as f:
        lines = [line.split(" #")[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]


def pip_spec(pip: Any, config: Any) -> PipSpec:
    opts: dict[str, Any] = pip if isinstance(pip, dict) else {"packages": pip}
    packages = opts.get("packages", [])
    if isinstance(packages, str):
        packages = _requirements(packages)
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise TypeError(f"runtime_env pip packages must be a list of str, got {packages!r}")
    install = opts.get("pip_install_options", [])
    if not isinstance(install, list) or not all(isinstance(o, str) for o in install):
        raise TypeError(f"pip_install_options must be a list of str, got {install!r}")
    check = opts.get("pip_check", False)
    if not isinstance(check, bool):
        raise TypeError(f"pip_check must be a bool, got {check!r}")
    version = opts.get("pip_version") or ""
    if not isinstance(version, str):
        raise TypeError(f"pip_version must be a str such as '==24.0', got {version!r}")
    return PipSpec(
        packages=[p.strip() for p in packages if p.strip()], pip_check=check, pip_version=version,
        install_options=list(install), setup_timeout_s=setup_timeout(config),
    )


def package_env(rt: CoreRuntime, runtime_env: dict[str, Any]) -> dict[str, str]:
    """The environment entries naming the runtime_env's packages and pip
    environment, worked out and uploaded once per runtime (as Ray does per
    job: later edits to the files are not seen)."""
    key = json.dumps({k: runtime_env.get(k) for k in (*PACKAGE_FIELDS, "excludes", "config")},
                     sort_keys=True, default=_module_path)
    env = rt.packages.get(key)
    if env is None:
        env = {}
        if runtime_env.get("working_dir"):
            env[WORKING_DIR_ENV] = _upload_working_dir(rt, runtime_env)
        if runtime_env.get("py_modules"):
            env[PY_MODULES_ENV] = ",".join(_upload_module(rt, mod) for mod in runtime_env["py_modules"])
        if runtime_env.get("pip"):
            spec = pip_spec(runtime_env["pip"], runtime_env.get("config"))
            if spec.packages:
                env[PIP_ENV] = encode_pip(spec)
        rt.packages[key] = env
    return env


def _module_path(mod: Any) -> str:
    if isinstance(mod, types.ModuleType):
        return _module_dir(mod)
    return str(mod)


def _module_dir(mod: types.ModuleType) -> str:
    """A module given in py_modules: its package's directory (or its file's)."""
    path = getattr(mod, "__file__", None)
    if not path:
        raise ValueError(f"runtime_env py_modules: module {mod.__name__} has no file to ship")
    if os.path.basename(path) == "__init__.py":
        return os.path.dirname(path)
    return path


def _store(rt: CoreRuntime, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    rt.call_head(m.KvPut(namespace=KV_NAMESPACE, key=digest.encode(), value=data, overwrite=False))
    return digest


def _upload_working_dir(rt: CoreRuntime, runtime_env: dict[str, Any]) -> str:
    return _store(rt, pack_dir(str(runtime_env["working_dir"]), list(runtime_env.get("excludes") or [])))


def _upload_module(rt: CoreRuntime, mod: Any) -> str:
    """One py_modules entry: a directory (importable by its name), a single
    .py file, or a .whl file; stored by hash."""
    path = _module_dir(mod) if isinstance(mod, types.ModuleType) else mod
    if not isinstance(path, str):
        raise TypeError(f"runtime_env py_modules entries must be paths or modules, got {mod!r}")
    if "://" in path:
        raise ValueError(f"runtime_env py_modules {path!r}: manta takes local directories, .py files and "
                         f".whl files, not remote URIs")
    full = os.path.abspath(os.path.expanduser(path))
    name = os.path.basename(full.rstrip(os.sep))
    if os.path.isdir(full):
        return _store(rt, pack_dir(full, field="py_modules", prefix=name + "/"))
    if os.path.isfile(full) and (full.endswith(".whl") or full.endswith(".py")):
        if os.path.getsize(full) > MAX_BYTES:
            raise ValueError(f"runtime_env py_modules {path!r} is over {MAX_BYTES // 2**20} MiB")
        with open(full, "rb") as f:
            data = f.read()
        if full.endswith(".py"):  # a one-file module: zipped as itself
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
            data = buf.getvalue()
        return _store(rt, data)  # a wheel is a zip whose top level goes on sys.path
    raise ValueError(f"runtime_env py_modules {path!r} is not a directory, a .py file or a .whl file")


def _unpacked(rt: CoreRuntime, digest: str, kind: str, name: str) -> str:
    """Worker: package `digest` unpacked at `<node cache>/<kind>/<name>`,
    fetched into the node's cache first if this node has not yet."""
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise exc.RuntimeEnvSetupError(f"not a runtime_env package hash: {digest[:80]!r}")
    base = os.path.join(rt.session.session_dir, "runtime_resources", kind)
    target = os.path.join(base, name)
    if os.path.isdir(target):
        return target
    cached = os.path.join(rt.session.session_dir, "runtime_resources", "packages", f"{digest}.zip")
    if not os.path.exists(cached):
        data = rt.call_head(m.KvGet(namespace=KV_NAMESPACE, key=digest.encode())).value
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise exc.RuntimeEnvSetupError(f"the runtime_env package {digest} is missing or corrupt")
        os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)
    os.makedirs(base, mode=0o700, exist_ok=True)
    staging = f"{target}.{os.getpid()}"
    with zipfile.ZipFile(cached) as zf:
        zf.extractall(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another worker unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def set_up_packages(rt: CoreRuntime, env: dict[str, str], job_id: int) -> None:
    """Worker: enters the packages (RuntimeEnvSetupError if it cannot), and
    tells its node agent how long that took or why it failed, for
    `list_runtime_envs`."""
    started = time.monotonic()
    error = ""
    try:
        enter_packages(rt, env, job_id)
    except Exception as e:  # noqa: BLE001 - the task fails with the reason
        error = f"could not set up the runtime_env packages: {e}"
        raise exc.RuntimeEnvSetupError(error) from e
    finally:
        ms = (time.monotonic() - started) * 1000
        rt.post(rt.send_agent, sm.RuntimeEnvSetUp(worker_id=rt.worker_id, ms=ms, error=error))


def package_uri(digest: str) -> str:
    """How the state API names a package: in Ray's shape (a scheme, then
    the package), with the scheme saying where it lives (the head's KV)."""
    return f"manta://_manta_pkg_{digest}.zip"


def runtime_env_of(env: dict[str, str]) -> tuple[dict[str, Any], bool]:
    """The runtime_env (as Ray shows it) that a worker environment's
    variables stand for, and whether it needs setting up beyond them."""
    env = dict(env)
    out: dict[str, Any] = {}
    wd = env.pop(WORKING_DIR_ENV, None)
    modules = env.pop(PY_MODULES_ENV, None)
    pip = env.pop(PIP_ENV, None)
    if pip:
        try:
            spec = decode_pip(pip)
            out["pip"] = {"packages": list(spec.packages), "pip_check": spec.pip_check}
            if spec.pip_version:
                out["pip"]["pip_version"] = spec.pip_version
            if spec.install_options:
                out["pip"]["pip_install_options"] = list(spec.install_options)
        except ValueError:
            out["pip"] = pip  # shown as it came
    if modules:
        out["py_modules"] = [package_uri(d) for d in modules.split(",") if d]
    if wd:
        out["working_dir"] = package_uri(wd)
    if env:
        out["env_vars"] = env
    return out, bool(wd or modules or pip)


def enter_packages(rt: CoreRuntime, env: dict[str, str], job_id: int) -> None:
    """Worker, before its first task of a runtime_env: py_modules importable,
    then the job's copy of the working_dir entered (it goes first on sys.path)."""
    for digest in filter(None, env.get(PY_MODULES_ENV, "").split(",")):
        path = _unpacked(rt, digest, "py_modules", digest)
        if path not in sys.path:
            sys.path.insert(0, path)
    wd = env.get(WORKING_DIR_ENV)
    if wd:
        job_dir = _unpacked(rt, wd, "working_dir", f"job_{job_id}_{wd[:16]}")
        os.chdir(job_dir)
        if job_dir not in sys.path:
            sys.path.insert(0, job_dir)
