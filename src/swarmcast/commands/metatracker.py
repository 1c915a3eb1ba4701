"""``swarmcast metatracker --port P --config FILE``: a ready metatracker server (discovery/metatracker_server.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from swarmcast.commands.options import port, positive_float
from swarmcast.discovery.metatracker_server import DEFAULT_POLL_INTERVAL, ConfigError, ConfigFile, make_app
from swarmcast.http.listen import ListenError, listening
from swarmcast.logsetup import setup_logging
from swarmcast.node.lifecycle import run_until_stopped

log = logging.getLogger("swarmcast.metatracker")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "metatracker", help="answer nodes' and engines' metatracker queries from a JSON config file",
        description="Answers GET <any path>?infohash=<40 hex> with the trackers, start nodes and interval the "
                    "config file gives that broadcast (or its \"default\"); the file is re-read when it changes. "
                    "Format: docs/operators.md, section Metatracker.",
    )  # fmt: skip
    parser.add_argument("--port", type=port, required=True, help="TCP port to answer on (required)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help='JSON: {"default": {...}, "<40-hex infohash>": {...}}, each entry with optional '
                             '"trackers", "startup_nodes" ("IP:PORT") and "interval" (seconds)')  # fmt: skip
    parser.add_argument("--poll-interval", type=positive_float, default=DEFAULT_POLL_INTERVAL, metavar="SECONDS",
                        help=f"seconds between checks of the config file for changes (default "
                             f"{DEFAULT_POLL_INTERVAL:g})")  # fmt: skip
    parser.add_argument("--log-file", type=Path, help="log to this file (default: stderr)")
    parser.add_argument("--debug", action="store_true", help="debug logging (default: off)")
    parser.set_defaults(func=run_metatracker)


def _error(message: str) -> int:
    print(f"swarmcast metatracker: error: {message}", file=sys.stderr)
    return 2


def run_metatracker(args: argparse.Namespace) -> int:
    try:
        config = ConfigFile(args.config)
    except ConfigError as error:
        message = str(error)
        return _error(message if str(args.config) in message else f"--config {args.config}: {message}")
    setup_logging(args.log_file, verbose=args.debug)
    failed: list[str] = []

    async def main(stop: asyncio.Event) -> None:
        try:
            async with listening(make_app(config), args.bind, args.port):
                log.info("metatracker on http://%s:%d/ serving %s (%d broadcast entries)", args.bind, args.port,
                         args.config, len(config.config.answers))  # fmt: skip
                watcher = asyncio.create_task(config.watch(args.poll_interval), name="metatracker-config-watch")
                try:
                    await stop.wait()
                finally:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
        except ListenError as error:
            failed.append(str(error))

    asyncio.run(run_until_stopped(main))
    if failed:
        return _error(failed[0])
    return 0
