"""`ray.runtime_env.RuntimeEnv`: an environment for a job, task or actor."""

from __future__ import annotations

from typing import Any

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """A runtime environment, as Ray's class: a dict of its fields, usable
    wherever a `runtime_env` dict is. manta applies `env_vars`,
    `working_dir` (with `excludes`), `py_modules`, `pip` and `config`; the
    other fields are kept as given."""

    def __init__(
        self,
        *,
        py_modules: list[str] | None = None,
        working_dir: str | None = None,
        pip: Any = None,
        conda: Any = None,
        container: Any = None,
        env_vars: dict[str, str] | None = None,
        worker_process_setup_hook: Any = None,
        config: Any = None,
        _validate: bool = True,
        **kwargs: Any,
    ) -> None:
        given = dict(
            py_modules=py_modules, working_dir=working_dir, pip=pip, conda=conda, container=container,
            env_vars=env_vars, worker_process_setup_hook=worker_process_setup_hook, config=config, **kwargs,
        )
        if env_vars is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError("runtime_env env_vars must map str to str")
        super().__init__({k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class RuntimeEnvConfig(dict):  # type: ignore[type-arg]
    """How a runtime environment is set up (Ray's class): `setup_timeout_seconds`
    (an int > 0, or -1 for none; 600 by default) bounds building its pip
    environment; `eager_install` and `log_files` are accepted."""

    def __init__(
        self, setup_timeout_seconds: int = 600, eager_install: bool = True, log_files: list[str] | None = None,
    ) -> None:
        if not isinstance(setup_timeout_seconds, int) or isinstance(setup_timeout_seconds, bool):
            raise TypeError(f"setup_timeout_seconds must be an int, got {setup_timeout_seconds!r}")
        if not (setup_timeout_seconds > 0 or setup_timeout_seconds == -1):
            raise ValueError(f"setup_timeout_seconds must be > 0, or -1 for no timeout, got {setup_timeout_seconds}")
        if not isinstance(eager_install, bool):
            raise TypeError(f"eager_install must be a bool, got {eager_install!r}")
        super().__init__(setup_timeout_seconds=setup_timeout_seconds, eager_install=eager_install,
                         log_files=list(log_files or []))

    def to_dict(self) -> dict[str, Any]:
        return dict(self)
