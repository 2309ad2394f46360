"""The memory monitor's victim choice and the node tunables, without processes."""

import pytest

from manta._private.config import Config
from manta._private.node.memory import Candidate, memory_usage, pick_victim


def test_victim_is_retriable_work_first_newest_first():
    old_r = Candidate(b"a", True, 1.0)
    new_r = Candidate(b"b", True, 2.0)
    newest_fixed = Candidate(b"c", False, 3.0)
    assert pick_victim([old_r, new_r, newest_fixed]) is new_r
    assert pick_victim([old_r, newest_fixed]) is old_r
    # With nothing retriable, the newest goes.
    assert pick_victim([Candidate(b"x", False, 1.0), Candidate(b"y", False, 5.0)]).worker_id == b"y"
    assert pick_victim([]) is None


def test_memory_usage_reads_this_machine():
    used, total = memory_usage()
    assert 0 < used < total


def test_system_config_keys_map_to_node_tunables():
    cfg = Config.build({
        "object_spilling_config": '{"type": "filesystem", "params": {"directory_path": "/data/spill"}}',
        "object_spilling_threshold": 0.5,
        "memory_usage_threshold": 0.9,
        "max_lineage_bytes": 1000,
    })
    assert (cfg.spill_dir, cfg.spill_threshold, cfg.memory_threshold, cfg.max_lineage_bytes) == (
        "/data/spill", 0.5, 0.9, 1000)
    assert Config.from_json(cfg.to_json()) == cfg
    # The flag wins over the config key.
    assert Config.build({}, spill_dir="/flag/dir").spill_dir == "/flag/dir"


def test_bad_system_config_values_are_named(capsys):
    with pytest.raises(ValueError, match="object_spilling_threshold"):
        Config.build({"object_spilling_threshold": 2})
    with pytest.raises(ValueError, match="memory_usage_threshold"):
        Config.build({"memory_usage_threshold": "high"})
    with pytest.raises(ValueError, match="object_spilling_config"):
        Config.build({"object_spilling_config": '{"type": "smart_open"}'})
    Config.build({"some_ray_only_key": 1})
    assert "some_ray_only_key" in capsys.readouterr().err


def test_environment_and_system_config_build_one_config():
    env = {"MANTA_NODE_TIMEOUT_S": "3", "MANTA_HEARTBEAT_S": "0.2", "MANTA_MAX_LINEAGE_BYTES": "5000"}
    cfg = Config.build({"max_lineage_bytes": 7000}, env)
    # The system config wins over the environment, which wins over defaults.
    assert (cfg.node_timeout_s, cfg.heartbeat_s, cfg.max_lineage_bytes, cfg.head_reconnect_s) == (3.0, 0.2, 7000, 60.0)
    with pytest.raises(ValueError, match="MANTA_HEARTBEAT_S"):
        Config.build(None, {"MANTA_HEARTBEAT_S": "soon"})
    with pytest.raises(AttributeError):
        cfg.heartbeat_s = 1.0  # type: ignore[misc]
