"""The chaos suite: real clusters with killers; see chaos_support.py."""

import os

import pytest

BACKEND = (os.environ.get("MANTA_TEST_BACKEND") or "manta").strip()


def pytest_collection_modifyitems(config, items):
    if BACKEND != "manta":
        skip = pytest.mark.skip(reason="kills manta's own processes")
        for item in items:
            if "chaos" in str(item.fspath):
                item.add_marker(skip)
