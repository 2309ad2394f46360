"""The version of manta this code is (one place; the package re-exports it)."""

VERSION = "0.1.0"
