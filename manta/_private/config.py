"""A node's tunables, from Ray's `_system_config` keys and `manta start` flags.

    init(_system_config={...})            a local cluster's node
    manta start ... --system-config JSON  a long-lived node
    manta start ... --object-spilling-directory DIR

Keys manta does not use are reported once and ignored, so Ray programs that
pass other tunables still run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

# Ray's names for what manta reads, and the field each one sets.
_KEYS = {
    "object_spilling_threshold": "spill_threshold",
    "local_fs_capacity_threshold": "disk_threshold",
    "memory_usage_threshold": "memory_threshold",
    "memory_monitor_refresh_ms": "memory_monitor_ms",
    "max_lineage_bytes": "max_lineage_bytes",
}


@dataclass
class NodeConfig:
    # Where objects spill when the store passes `spill_threshold` ("" = <session>/spill).
    spill_dir: str = ""
    spill_threshold: float = 0.8
    # Spilling stops (OutOfDiskError) once the disk would pass this fraction.
    disk_threshold: float = 0.95
    # The memory monitor kills workers above this fraction of node memory (1.0: off).
    memory_threshold: float = 0.95
    memory_monitor_ms: int = 250
    # Lineage a driver keeps to rebuild lost objects.
    max_lineage_bytes: int = 1 << 30

    @classmethod
    def from_system_config(cls, system_config: dict[str, Any] | None, spill_dir: str | None = None) -> NodeConfig:
        cfg = cls()
        if system_config is not None and not isinstance(system_config, dict):
            raise TypeError(f"_system_config must be a dict, got {type(system_config).__name__}")
        ignored = []
        for key, value in (system_config or {}).items():
            if key == "object_spilling_config":
                cfg.spill_dir = _spill_directory(value)
            elif key in _KEYS:
                cfg._set(_KEYS[key], key, value)
            else:
                ignored.append(key)
        if ignored:
            print(f"manta: warning: ignoring _system_config keys manta does not use: {', '.join(sorted(ignored))}",
                  file=sys.stderr)
        if spill_dir:
            cfg.spill_dir = spill_dir
        return cfg

    def _set(self, field: str, key: str, value: Any) -> None:
        kind = type(getattr(self, field))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"_system_config[{key!r}] must be a number, got {value!r}")
        if kind is float and not 0.0 < value <= 1.0:
            raise ValueError(f"_system_config[{key!r}] must be a fraction in (0, 1], got {value!r}")
        if kind is int and value <= 0:
            raise ValueError(f"_system_config[{key!r}] must be positive, got {value!r}")
        setattr(self, field, kind(value))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        return cls(**json.loads(text)) if text else cls()


def _spill_directory(value: Any) -> str:
    """The directory of Ray's object_spilling_config (a JSON string or a dict)."""
    try:
        spec = json.loads(value) if isinstance(value, str) else value
        if spec.get("type", "filesystem") != "filesystem":
            raise ValueError(f"manta spills only to the local filesystem, not {spec['type']!r}")
        path = spec["params"]["directory_path"]
        if isinstance(path, list):
            path = path[0]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            'object_spilling_config must look like {"type": "filesystem", "params": '
            f'{{"directory_path": "/some/dir"}}}}: {e}'
        ) from None
    return str(path)
