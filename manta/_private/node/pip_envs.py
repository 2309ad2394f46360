"""runtime_env `pip`: one virtual environment per distinct spec on each node.

The agent builds an environment the first time a lease asks for it, once
per spec hash however many requests wait, and starts that environment's
workers from a fork server running its interpreter. A build that fails or
runs past `setup_timeout_seconds` fails the requests waiting for it with
pip's own output; the next request tries again.

The environment sees manta and everything installed beside it: a `.pth`
file adds the agent's site directories after the environment's own, so
what pip installs there wins and the rest is shared (as a virtualenv with
system site packages would, but for a parent that is a venv itself). uv
builds it where it is on PATH, else `venv` and the parent's pip. A node
whose admin restricted pip sources (`node/pip_policy.py`) refuses a spec
asking for others before it runs anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import site
import sys

from manta._private.node.pip_policy import PipPolicy
from manta._private.protocol.runtime_env import PipSpec, env_hash

log = logging.getLogger(__name__)

# What an error keeps of pip's output: its end says what went wrong.
OUTPUT_TAIL = 6000
READY_MARK = ".manta-ready"


class SetupFailed(Exception):
    """The environment could not be built; the message says why, with pip's output."""


class PipEnvironments:
    def __init__(self, root: str, policy: PipPolicy = PipPolicy()) -> None:
        self.root = root
        self.policy = policy
        self.ready: dict[str, str] = {}  # hash -> the environment's python
        self._building: dict[str, asyncio.Future[str]] = {}

    def forget(self, digest: str) -> None:
        """The environment is broken (its python will not start): the next
        request builds it again."""
        python = self.ready.pop(digest, None)
        if python is not None:
            try:
                os.unlink(os.path.join(os.path.dirname(os.path.dirname(python)), READY_MARK))
            except OSError:
                pass

    def python_of(self, spec: PipSpec) -> str | None:
        """The environment's interpreter if it is built here, else None."""
        return self.ready.get(env_hash(spec))

    async def ensure(self, spec: PipSpec) -> str:
        """Builds the environment unless it is (being) built; returns its python."""
        why = self.policy.refusal(spec)
        if why:
            log.warning("refused to build a pip environment: %s", why)
            raise SetupFailed(f"runtime_env pip {spec.packages} refused: {why}")
        digest = env_hash(spec)
        if digest in self.ready:
            return self.ready[digest]
        fut = self._building.get(digest)
        if fut is None:
            fut = self._building[digest] = asyncio.get_running_loop().create_future()
            try:
                python = await self._build(digest, spec)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - every failure is the environment's
                err = e if isinstance(e, SetupFailed) else SetupFailed(f"setting up the pip environment failed: {e}")
                fut.set_exception(err)
                fut.exception()  # retrieved: there may be no other waiter
                raise err from None
            finally:
                del self._building[digest]
            self.ready[digest] = python
            fut.set_result(python)
            return python
        return await asyncio.shield(fut)

    async def _build(self, digest: str, spec: PipSpec) -> str:
        path = os.path.join(self.root, digest[:32])
        python = os.path.join(path, "bin", "python")
        if os.path.exists(os.path.join(path, READY_MARK)):
            return python
        shutil.rmtree(path, ignore_errors=True)  # an earlier build broke off
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        limit = spec.setup_timeout_s
        deadline = None if limit is None else asyncio.get_running_loop().time() + limit
        log.info("building the pip environment %s for %s", digest[:12], spec.packages)
        uv = shutil.which("uv")
        if uv:
            await _step(deadline, spec, "uv venv", uv, "venv", "--quiet", "--python", sys.executable, path)
        else:
            await _step(deadline, spec, "venv", sys.executable, "-m", "venv", "--without-pip", path)
        _share_site_packages(path)
        reqs = os.path.join(path, "requirements.txt")
        with open(reqs, "w") as f:
            f.write("\n".join(spec.packages) + "\n")
        sources = self.policy.index_options(spec)
        if uv:
            await _step(deadline, spec, "uv pip install", uv, "pip", "install", "--python", python,
                        *sources, *spec.install_options, "-r", reqs)
            if spec.pip_check:  # pip_version has no meaning to uv
                await _step(deadline, spec, "uv pip check", uv, "pip", "check", "--python", python)
        else:
            pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
            if spec.pip_version:
                await _step(deadline, spec, "pip install pip", *pip, "install", f"pip{spec.pip_version}")
            await _step(deadline, spec, "pip install", *pip, "install", *sources, *spec.install_options, "-r", reqs)
            if spec.pip_check:
                await _step(deadline, spec, "pip check", *pip, "check")
        open(os.path.join(path, READY_MARK), "w").close()
        log.info("pip environment %s is ready", digest[:12])
        return python

    def environment(self, python: str) -> dict[str, str]:
        """What a worker of the environment has in its os.environ, as in an activated venv."""
        venv = os.path.dirname(os.path.dirname(python))
        return {"VIRTUAL_ENV": venv, "PATH": os.path.join(venv, "bin") + os.pathsep + os.environ.get("PATH", "")}


def _share_site_packages(path: str) -> None:
    """Makes the parent's packages importable after the environment's own."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    lib = os.path.join(path, "lib")
    for name in os.listdir(lib):
        target = os.path.join(lib, name, "site-packages")
        if os.path.isdir(target):
            # addsitedir, not a plain path line: the parent's own .pth files
            # (editable installs among them) must be read too.
            with open(os.path.join(target, "_manta_parent_site.pth"), "w") as f:
                f.write("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs))


async def _step(deadline: float | None, spec: PipSpec, what: str, *argv: str) -> None:
    loop = asyncio.get_running_loop()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        out, _ = await asyncio.wait_for(proc.communicate(), left)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SetupFailed(
            f"setting up the pip environment {spec.packages} timed out after {spec.setup_timeout_s} s "
            f"(during {what}); raise runtime_env config setup_timeout_seconds if it needs longer"
        ) from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        if len(text) > OUTPUT_TAIL:
            text = "...\n" + text[-OUTPUT_TAIL:]
        raise SetupFailed(
            f"setting up the pip environment {spec.packages} failed: {what} exited with code "
            f"{proc.returncode}:\n{text}"
        )
