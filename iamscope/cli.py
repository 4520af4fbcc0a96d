"""Command line: ``iamscope demo`` (more commands arrive with the policy and demo issues)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iamscope")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="verify real tokens against a local issuer, end to end")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from iamscope.demo import run

        return run(sys.stdout)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
