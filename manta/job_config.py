"""`ray.job_config.JobConfig`: settings a driver gives its whole job."""

from __future__ import annotations

from typing import Any


class JobConfig:
    """What `init(job_config=...)` applies to every task and actor of the job.

    `code_search_path` directories go on every worker's `sys.path`;
    `runtime_env` is the job's default environment; `ray_namespace` is the
    namespace (as `init(namespace=...)`); `metadata` is kept with the job.
    `jvm_options` is accepted for Ray's signature (there is no Java here).
    """

    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, str] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        self.jvm_options = list(jvm_options or [])
        self.code_search_path = [str(p) for p in (code_search_path or [])]
        self.runtime_env = dict(runtime_env or {})
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.default_actor_lifetime = _lifetime(default_actor_lifetime)
        self._py_driver_sys_path = list(_py_driver_sys_path or [])

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: dict[str, Any] | None, validate: bool = False) -> None:
        self.runtime_env = dict(runtime_env or {})

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        self.default_actor_lifetime = _lifetime(default_actor_lifetime)

    def __repr__(self) -> str:
        return (
            f"JobConfig(code_search_path={self.code_search_path!r}, runtime_env={self.runtime_env!r}, "
            f"metadata={self.metadata!r}, ray_namespace={self.ray_namespace!r})"
        )


def _lifetime(value: str) -> str:
    if value not in ("detached", "non_detached"):
        raise ValueError(f"default_actor_lifetime must be 'detached' or 'non_detached', got {value!r}")
    return value
