"""runtime_env working_dir packages: what goes in, and the size limit."""

import io
import zipfile

import pytest

from manta._private.runtime import packaging


def _names(data):
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def test_excludes_work_as_gitignore_patterns(tmp_path):
    for rel in ["a.py", "data/x.csv", "data/y.log", "build/out.o", "deep/build/keep.txt", ".git/HEAD", "n/m.log"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    # "*.log" at any depth; "/build/" and "data/x.csv" from the top only;
    # .git always stays out.
    data = packaging.pack_dir(str(tmp_path), ["*.log", "/build/", "data/x.csv"])
    assert _names(data) == ["a.py", "deep/build/keep.txt"]
    # Without the leading slash, a directory name matches at any depth.
    assert _names(packaging.pack_dir(str(tmp_path), ["*.log", "build/", "data/"])) == ["a.py"]


def test_the_same_files_make_the_same_package(tmp_path):
    (tmp_path / "f.txt").write_text("same")
    assert packaging.pack_dir(str(tmp_path)) == packaging.pack_dir(str(tmp_path))


def test_a_package_past_the_limit_is_refused_clearly(tmp_path, monkeypatch):
    (tmp_path / "big.bin").write_bytes(b"x" * 2000)
    monkeypatch.setattr(packaging, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="excludes"):
        packaging.pack_dir(str(tmp_path))
    with pytest.raises(ValueError, match="not a directory"):
        packaging.pack_dir(str(tmp_path / "missing"))


def test_a_pip_spec_survives_its_trip_in_an_environment_variable():
    from manta._private.protocol.runtime_env import PipSpec, decode_pip, encode_pip, env_hash

    for config in (None, {"setup_timeout_seconds": -1}, {"setup_timeout_seconds": 30}):
        spec = packaging.pip_spec({"packages": ["a==1", " b "], "pip_check": True}, config)
        assert decode_pip(encode_pip(spec)) == spec
        assert env_hash(spec) == env_hash(PipSpec(packages=["a==1", "b"], pip_check=True))  # the timeout aside
    assert packaging.pip_spec(["a"], {"setup_timeout_seconds": -1}).setup_timeout_s is None
    with pytest.raises(ValueError):
        decode_pip('{"packages": 5}')


def test_user_env_vars_may_not_name_the_runtime_envs_own_variables():
    with pytest.raises(ValueError, match="MANTA_RUNTIME_ENV_PIP"):
        packaging.check_runtime_env({"env_vars": {"MANTA_RUNTIME_ENV_PIP": "{}"}})
    with pytest.raises(ValueError):
        packaging.pip_spec(["a"], {"setup_timeout_seconds": 0})
