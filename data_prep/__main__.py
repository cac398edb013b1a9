"""Command line: ``python -m data_prep <subcommand> ...``.

Each subcommand lives in its own module, listed in SUBCOMMAND_MODULES, which provides
``add_cli_subcommand(subparsers)``; that function adds the subparser and sets ``run`` (args -> None).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMAND_MODULES = ("data_prep.synthetic", "data_prep.cub", "data_prep.nabirds", "data_prep.flowers",
                      "data_prep.dogs", "data_prep.cars", "data_prep.vtab", "data_prep.verify")


class _OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single 'prog: error: message' line (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Top-level parser with one subparser per module in SUBCOMMAND_MODULES."""
    parser = _OneLineErrorParser(prog="python -m data_prep", description="Prepare datasets for e2vpt_viz.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_cli_subcommand(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; bad input or file-system errors print one line and return 2, Ctrl-C returns 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted; run the same command again: a partial download resumes "
              "from its .part file and a half-extracted staging folder is removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
