"""requirements/test.lock, which `make test` installs from, still pins what
pyproject.toml asks for: every dependency and test extra, at a version its
specifier accepts, with hashes. When this fails, run `make lock`."""

import os
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _locked() -> dict[str, list[tuple[str, str]]]:
    """name -> [(version, marker)] of every pin in the lock, each checked to carry hashes."""
    text = open(os.path.join(ROOT, "requirements", "test.lock")).read()
    pins: dict[str, list[tuple[str, str]]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = entry.splitlines()[0]
        if head.startswith("#") or not head.strip():
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+))?", head)
        assert match, head
        assert "--hash=sha256:" in entry, f"{head}: no hash"
        pins.setdefault(canonicalize_name(match.group(1)), []).append(
            (match.group(2), (match.group(3) or "").strip()))
    return pins


def test_the_lock_pins_every_dependency_and_test_extra_with_hashes():
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"], "setuptools>=64"]
    pins = _locked()
    stale = []
    for line in wanted:
        req = Requirement(line)
        versions = pins.get(canonicalize_name(req.name), [])
        if not any(req.specifier.contains(v, prereleases=True) for v, _ in versions):
            stale.append(f"{line} (locked: {[v for v, _ in versions] or 'nothing'})")
    assert stale == [], f"requirements/test.lock is out of date: run `make lock`. Not pinned: {stale}"
