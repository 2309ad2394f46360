"""Shared constants for the cluster tests."""

import os

BACKEND = (os.environ.get("MANTA_TEST_BACKEND") or "manta").strip()
