"""``swarmcast engine``: the viewer's engine with the Ace Stream playback API."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from swarmcast.commands.options import (
    add_admission_options,
    add_log_options,
    add_upload_options,
    admission_from_args,
    bounded_int,
    port,
    positive_int,
    start_logging,
    tracker_url,
)
from swarmcast.commands.preflight import preflight_engine
from swarmcast.commands.registry_flags import add_registry_options, advertised_host, endpoint_from_args, with_registry
from swarmcast.http.engine_api import CappedSite, make_runner
from swarmcast.node.config import DEFAULT_LIVE_CACHE_SIZE, CacheConfig
from swarmcast.node.engine import ENGINE_WINDOW_PIECES, MIN_ENGINE_WINDOW_PIECES, Engine, EngineConfig
from swarmcast.node.joiner import LocalFiles
from swarmcast.node.lifecycle import pid_file, run_until_stopped
from swarmcast.registry.bootstrap import BootstrapError, StreamDirectory, attach, load_bootstrap, refresh_peers
from swarmcast.registry.reports import WILDCARDS, EngineReporter, format_address
from swarmcast.wire.messages import MAX_WINDOW_PIECES

log = logging.getLogger("swarmcast.engine")

EVENT_LOOPS = ("asyncio", "uvloop")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("engine", help="the viewer engine: play broadcasts over HTTP",
                                   description="The viewer engine: joins broadcasts on demand and serves players "
                                   "the Ace Stream playback API (/ace/getstream). Ace Stream's spelling: "
                                   "acestreamengine --client-console ...")  # fmt: skip
    parser.add_argument("--http-port", type=port, default=6878,
                        help="TCP port of the playback API (default %(default)s, Ace Stream's)")
    parser.add_argument("--http-bind", default="127.0.0.1", metavar="IP",
                        help="address of the playback API (default %(default)s: this machine only)")
    parser.add_argument("--port", type=port, default=8621,
                        help="TCP port of the peer protocol (default %(default)s, Ace Stream's; a support node on "
                             "the same machine needs another)")  # fmt: skip
    parser.add_argument("--bind", default="0.0.0.0", metavar="IP",
                        help="address of the peer protocol (default %(default)s = every IPv4 address)")
    parser.add_argument("--tracker", type=tracker_url, action="append", default=[], metavar="URL",
                        help="a tracker used for every broadcast besides the transport file's (repeatable; "
                             "default: none)")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="directory of the disk cache (--live-cache-type disk; default /tmp/swarmcast-cache)")
    parser.add_argument("--live-cache-type", choices=("memory", "disk"), default="memory",
                        help="where each broadcast's live window is kept (default %(default)s)")
    parser.add_argument("--live-cache-size", "--live-mem-cache-size", dest="live_cache_size", type=positive_int,
                        default=DEFAULT_LIVE_CACHE_SIZE, metavar="BYTES",
                        help="hard cap of each broadcast's live cache in bytes (default %(default)s = 200 MiB)")
    parser.add_argument("--live-window-pieces", type=bounded_int(MIN_ENGINE_WINDOW_PIECES, MAX_WINDOW_PIECES),
                        default=ENGINE_WINDOW_PIECES, metavar="N",
                        help="pieces of each broadcast kept behind the newest one, within --live-cache-size "
                             "(default %(default)s, about 20 s of 0.2 s pieces; players more than 10 s behind jump "
                             f"to live; {MIN_ENGINE_WINDOW_PIECES}..{MAX_WINDOW_PIECES})")  # fmt: skip
    parser.add_argument("--startup-timeout", type=positive_int, default=30, metavar="SECONDS",
                        help="seconds a player waits for a broadcast that sends nothing before a 504 "
                             "(default %(default)s)")  # fmt: skip
    add_upload_options(parser, default_slots=16)
    parser.add_argument("--max-peers", type=positive_int, default=60, metavar="N",
                        help="peers connected per broadcast (default %(default)s)")
    parser.add_argument(
        "--allow-local-transport-files",
        action="store_true",
        help="let url= name any local file the engine can read (default: http(s) URLs only)",
    )
    parser.add_argument(
        "--transport-files-dir",
        type=directory,
        metavar="DIR",
        help="let url= name transport files under DIR (a relative name is taken inside it) (default: none)",
    )
    parser.add_argument(
        "--http-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name players use for the API besides IP addresses and localhost; * = any (DNS rebinding "
        "guard) (repeatable; default: none)",
    )
    parser.add_argument("--pid-file-dir", type=Path, default=Path("/tmp"), metavar="DIR",
                        help="where acestream-HTTP_PORT.pid is kept while the engine runs (default %(default)s)")
    parser.add_argument("--event-loop", type=event_loop, default="asyncio", metavar="|".join(EVENT_LOOPS),
                        help="the asyncio event loop: asyncio's own or uvloop, about a tenth less CPU per engine "
                             "(pip install 'swarmcast[uvloop]'; default %(default)s)")  # fmt: skip
    add_log_options(parser)
    add_admission_options(parser)
    add_registry_options(parser, engine=True)
    parser.set_defaults(func=run_engine, preflight=preflight_engine, prepare=start_logging, command_prog=parser.prog)


def run_engine(args: argparse.Namespace) -> int:
    config = EngineConfig(
        http_port=args.http_port,
        http_bind=args.http_bind,
        port=args.port,
        bind=args.bind,
        trackers=tuple(args.tracker),
        cache=CacheConfig(args.live_cache_type, args.live_cache_size, args.cache_dir),
        window_pieces=args.live_window_pieces,
        startup_timeout=float(args.startup_timeout),
        upload_slots=args.upload_slots,
        upload_limit=args.upload_limit,
        max_peers=args.max_peers,
        http_allowed_hosts=tuple(name.lower() for name in args.http_allowed_host),
        local_files=LocalFiles(allow_any=args.allow_local_transport_files, directory=args.transport_files_dir),
        admission=admission_from_args(args),
    )
    try:
        directory = engine_directory(args)
    except BootstrapError as error:
        print(f"{args.command_prog}: error: argument --bootstrap: {error}", file=sys.stderr)
        return 2
    http_host = config.http_bind if config.http_bind not in WILDCARDS else advertised_host(args, config.http_bind)
    reporter = EngineReporter(host=advertised_host(args, config.bind),
                              http=f"http://{format_address(http_host, config.http_port)}")  # fmt: skip

    async def main(stop: asyncio.Event) -> None:
        engine = reporter.engine = Engine(config)
        attach(engine, directory)
        await engine.start()
        runner = make_runner(engine)
        await runner.setup()
        site = CappedSite(runner, config.http_bind, config.http_port)
        await site.start()
        log.info("engine: playback API on http://%s:%d/, P2P port %d", config.http_bind, config.http_port,
                 engine.host.port)  # fmt: skip
        with pid_file(config_dir(args), config.http_port):
            refresher = asyncio.create_task(refresh_peers(engine), name="registry-peers")
            try:
                await stop.wait()
            finally:
                log.info("engine stopping")
                refresher.cancel()
                await asyncio.gather(refresher, return_exceptions=True)
                await runner.cleanup()
                await directory.close()  # registry lookups still running (each bounded anyway)
                await engine.close()

    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as loop_runner:
        loop_runner.run(run_until_stopped(with_registry(main, endpoint_from_args(args), reporter.describe,
                                                        reporter.figures)))  # fmt: skip
    return 0


def engine_directory(args: argparse.Namespace) -> StreamDirectory:
    """The streams this engine plays by name: --bootstrap's (read now; BootstrapError) and the registry's."""
    hints = load_bootstrap(args.bootstrap) if args.bootstrap is not None else []
    return StreamDirectory(endpoint_from_args(args), hints)


def event_loop(text: str) -> str:
    """``--event-loop``: asyncio's own, or uvloop (libuv; an optional dependency: ``swarmcast[uvloop]``)."""
    if text not in EVENT_LOOPS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(EVENT_LOOPS)}")
    if text == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise argparse.ArgumentTypeError("uvloop is not installed (pip install 'swarmcast[uvloop]')")
    return text


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``--event-loop`` names (None: asyncio's default)."""
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 - optional, and only the engines that ask for it load it

        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return None


def directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def config_dir(args: argparse.Namespace) -> Path:
    return Path(args.pid_file_dir)
