"""``swarmcast engine``: the viewer's engine with the Ace Stream playback API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from swarmcast.commands.options import (
    add_admission_options,
    add_upload_options,
    admission_from_args,
    port,
    positive_int,
    tracker_url,
)
from swarmcast.http.engine_api import CappedSite, make_runner
from swarmcast.logsetup import setup_logging
from swarmcast.node.config import DEFAULT_LIVE_CACHE_SIZE, CacheConfig
from swarmcast.node.engine import Engine, EngineConfig
from swarmcast.node.joiner import LocalFiles
from swarmcast.node.lifecycle import pid_file, run_until_stopped

log = logging.getLogger("swarmcast.engine")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("engine", help="the viewer engine: play broadcasts over HTTP")
    parser.add_argument("--http-port", type=port, default=6878)
    parser.add_argument("--http-bind", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=8621, help="P2P port")
    parser.add_argument("--bind", default="0.0.0.0", help="P2P address to listen on")
    parser.add_argument("--tracker", type=tracker_url, action="append", default=[])
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--live-cache-type", choices=("memory", "disk"), default="memory")
    parser.add_argument("--live-cache-size", type=positive_int, default=DEFAULT_LIVE_CACHE_SIZE)
    parser.add_argument("--startup-timeout", type=positive_int, default=30, help="seconds before a dead stream errs")
    add_upload_options(parser, default_slots=16)
    parser.add_argument("--max-peers", type=positive_int, default=60)
    parser.add_argument(
        "--allow-local-transport-files",
        action="store_true",
        help="let url= name any local file the engine can read (default: http(s) URLs only)",
    )
    parser.add_argument(
        "--transport-files-dir",
        type=directory,
        help="let url= name transport files under DIR (a relative name is taken inside it)",
    )
    parser.add_argument(
        "--http-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name players use for the API besides IP addresses and localhost; * = any (DNS rebinding guard)",
    )
    parser.add_argument("--pid-file-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--debug", action="store_true")
    add_admission_options(parser)
    parser.set_defaults(func=run_engine)


def run_engine(args: argparse.Namespace) -> int:
    setup_logging(args.log_file, verbose=args.debug)
    config = EngineConfig(
        http_port=args.http_port,
        http_bind=args.http_bind,
        port=args.port,
        bind=args.bind,
        trackers=tuple(args.tracker),
        cache=CacheConfig(args.live_cache_type, args.live_cache_size, args.cache_dir),
        startup_timeout=float(args.startup_timeout),
        upload_slots=args.upload_slots,
        upload_limit=args.upload_limit,
        max_peers=args.max_peers,
        http_allowed_hosts=tuple(name.lower() for name in args.http_allowed_host),
        local_files=LocalFiles(allow_any=args.allow_local_transport_files, directory=args.transport_files_dir),
        admission=admission_from_args(args),
    )

    async def main(stop: asyncio.Event) -> None:
        engine = Engine(config)
        await engine.start()
        runner = make_runner(engine)
        await runner.setup()
        site = CappedSite(runner, config.http_bind, config.http_port)
        await site.start()
        log.info("engine: playback API on http://%s:%d/, P2P port %d", config.http_bind, config.http_port,
                 engine.host.port)  # fmt: skip
        with pid_file(config_dir(args), config.http_port):
            try:
                await stop.wait()
            finally:
                log.info("engine stopping")
                await runner.cleanup()
                await engine.close()

    asyncio.run(run_until_stopped(main))
    return 0


def directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def config_dir(args: argparse.Namespace) -> Path:
    return Path(args.pid_file_dir)
