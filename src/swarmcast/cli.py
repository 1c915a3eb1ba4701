"""The ``swarmcast`` command: one entry point, one module per subcommand under swarmcast.commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from swarmcast import __version__

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func`` (args -> exit code).
COMMAND_MODULES = ("testsrc", "node", "engine", "demo", "metatracker")


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmcast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"swarmcast {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module = cast(_CommandModule, importlib.import_module(f"swarmcast.commands.{name}"))
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = args.func
    code = func(args)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
