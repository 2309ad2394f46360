"""A runtime_env as it travels: entries in a task's environment variables.

Workers are pooled by their environment variables, so naming each package
and pip environment there gives every distinct runtime_env workers of its
own, with no new field on the wire:

- `WORKING_DIR_ENV`: the working_dir package's hash;
- `PY_MODULES_ENV`: the py_modules packages' hashes, in order;
- `PIP_ENV`: the pip environment (`PipSpec` as JSON), which the node agent
  builds into a virtual environment before it starts such a worker.

The driver writes these (`runtime/packaging.py`); the agent and the
workers read them.
"""

# Annotations are not postponed: see protocol/messages.py.

import functools
import hashlib

import msgspec

WORKING_DIR_ENV = "MANTA_WORKING_DIR_PKG"
PY_MODULES_ENV = "MANTA_PY_MODULES_PKGS"
PIP_ENV = "MANTA_RUNTIME_ENV_PIP"
# Set by manta only: a user's env_vars naming them are refused.
RESERVED_VARS = frozenset({WORKING_DIR_ENV, PY_MODULES_ENV, PIP_ENV})
# Ray's default for `RuntimeEnvConfig.setup_timeout_seconds`.
DEFAULT_SETUP_TIMEOUT_S = 600.0


class PipSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pip environment: what to install and how."""

    packages: list[str]
    pip_check: bool = False
    # A version specifier for pip itself, e.g. "==24.0" (Ray's `pip_version`).
    pip_version: str = ""
    install_options: list[str] = []
    # None: no limit. Not part of the environment's identity (`env_hash`
    # leaves it out).
    setup_timeout_s: float | None = DEFAULT_SETUP_TIMEOUT_S


def encode_pip(spec: PipSpec) -> str:
    return msgspec.json.encode(spec).decode()


# The agent reads a request's spec where it checks, builds and starts
# workers; decoded once per distinct value (specs are frozen, so shared).
@functools.lru_cache(maxsize=256)
def decode_pip(value: str) -> PipSpec:
    """The spec in a worker environment (ValueError if it is malformed)."""
    try:
        return msgspec.json.decode(value, type=PipSpec)
    except msgspec.DecodeError as e:
        raise ValueError(f"malformed pip runtime_env {value[:200]!r}: {e}") from None


def env_hash(spec: PipSpec) -> str:
    """The environment's identity: one virtual environment per node for each."""
    ident = msgspec.json.encode([spec.packages, spec.pip_check, spec.pip_version, spec.install_options])
    return hashlib.sha256(ident).hexdigest()
