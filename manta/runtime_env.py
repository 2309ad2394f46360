"""`ray.runtime_env.RuntimeEnv`: an environment for a job, task or actor."""

from __future__ import annotations

from typing import Any

__all__ = ["RuntimeEnv"]


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """A runtime environment, as Ray's class: a dict of its fields, usable
    wherever a `runtime_env` dict is. manta applies `env_vars`; the other
    fields are kept as given."""

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
