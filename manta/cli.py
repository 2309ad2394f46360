"""The `manta` command. Cluster commands (start/stop/status) come with multi-node support."""

from __future__ import annotations

import argparse
import sys

import manta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="manta", description="manta: Ray Core's API, lighter")
    parser.add_argument("--version", action="version", version=f"manta {manta.__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(manta.__version__)
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
