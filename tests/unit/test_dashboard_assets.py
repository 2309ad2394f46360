"""The dashboard's static files: the committed chart bundle is there, the
page loads it, its license ships with it, and pyproject installs them all
(docs/dashboard.md). No processes."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from manta._private.head.http import dashboard

ROOT = Path(__file__).resolve().parents[2]
STATIC = dashboard.STATIC


def test_the_page_loads_only_the_packaged_scripts_and_styles() -> None:
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r'<script src="([^"]+)"', html)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert scripts == ["static/vendor/charts.js", "static/app.js"]
    assert "static/vendor/charts.css" in styles
    for ref in scripts + styles:
        assert (STATIC / ref.removeprefix("static/")).is_file(), ref
    assert "<script>" not in html and " style=" not in html  # the CSP admits neither


def test_the_chart_bundle_is_the_pinned_uplot_and_ships_its_license() -> None:
    pinned = json.loads((ROOT / "dashboard" / "package.json").read_text())["devDependencies"]["uplot"]
    lock = json.loads((ROOT / "dashboard" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/uplot"]["version"] == pinned
    bundle = (STATIC / "vendor" / "charts.js").read_text()
    assert bundle.startswith(f"/* uPlot {pinned} (MIT, see uPlot.LICENSE)")
    assert "window.uPlot" in bundle or "uPlot=" in bundle
    license_text = (STATIC / "vendor" / "uPlot.LICENSE").read_text()
    assert "MIT License" in license_text and "Leon Sorokin" in license_text


def test_pyproject_installs_every_static_file() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["manta._private.head.http"]
    installed = {p for pat in patterns for p in STATIC.parent.glob(pat)}  # setuptools' globs: * stops at /
    files = [p for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files
    for f in files:
        assert f in installed, f"{f} would not be installed"
