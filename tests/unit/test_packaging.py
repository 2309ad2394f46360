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
