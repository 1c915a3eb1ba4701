"""``swarmcast demo``: the whole chain on loopback with one command."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="test signal, source, two support nodes and an engine on loopback")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from swarmcast.demo import run  # noqa: PLC0415 - keeps `swarmcast --help` fast

    return run()
