"""``swarmcast broadcaster``: RTMP in, HLS out (Livepeer's broadcaster in the videoDAC recipe), one process.

    swarmcast broadcaster [--transcoding-options P144p30fps16x9,P240p30fps16x9]
    ffmpeg/OBS/swarmcast testsrc --rtmp rtmp://127.0.0.1:1935/hello_world
    curl http://127.0.0.1:8935/stream/hello_world/P144p30fps16x9.m3u8

The flags become one typed ``BroadcasterConfig``; the ports are checked before anything starts (one line naming
the flag, exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from swarmcast.broadcaster.p2p import P2PBroadcaster
from swarmcast.broadcaster.rtmp_chunks import DEFAULT_MAX_MESSAGE_BYTES
from swarmcast.broadcaster.rtmp_server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    RtmpServer,
    RtmpServerConfig,
)
from swarmcast.broadcaster.streams import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_RECONNECT_GRACE,
    DEFAULT_SEGMENT_DURATION,
    RegistryConfig,
    StreamRegistry,
)
from swarmcast.commands.options import add_log_options, address, positive_float, positive_int, start_logging
from swarmcast.commands.p2p_options import add_p2p_arguments, attach_p2p, p2p_config_from_args, ts_base_url
from swarmcast.commands.preflight import UsageError, check_listen, check_log_file
from swarmcast.commands.registry_flags import add_registry_options, advertised_host, endpoint_from_args, with_registry
from swarmcast.node.lifecycle import run_until_stopped
from swarmcast.registry.reports import WILDCARDS, BroadcasterReporter, format_address

if TYPE_CHECKING:
    from swarmcast.broadcaster.profiles import Profile

log = logging.getLogger("swarmcast.broadcaster")

DEFAULT_RTMP_ADDR = "127.0.0.1:1935"
DEFAULT_HTTP_ADDR = "127.0.0.1:8935"
MIN_SEGMENT_DURATION = 0.5
MAX_SEGMENT_DURATION = 30.0


def transcoding_options(text: str) -> list[Profile]:
    """``--transcoding-options``: Livepeer's profile names (comma list) or a JSON file of profiles."""
    from swarmcast.broadcaster.profiles import parse_transcoding_options  # noqa: PLC0415

    try:
        return parse_transcoding_options(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def segment_duration(text: str) -> float:
    value = positive_float(text)
    if not MIN_SEGMENT_DURATION <= value <= MAX_SEGMENT_DURATION:
        raise argparse.ArgumentTypeError(f"{value:g} is not in {MIN_SEGMENT_DURATION:g}..{MAX_SEGMENT_DURATION:g} s")
    return value


def publish_key(text: str) -> str:
    if not text or len(text) > 256 or "/" in text or "?" in text or not text.isprintable():
        raise argparse.ArgumentTypeError("must be 1..256 printable characters without '/' or '?'")
    return text


@dataclass(frozen=True)
class BroadcasterConfig:
    rtmp: RtmpServerConfig
    registry: RegistryConfig
    http_host: str = "127.0.0.1"
    http_port: int = 8935
    current_manifest: bool = False


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "broadcaster", help="take RTMP pushes and serve them as HLS (Livepeer's layout), optionally transcoded",
        description="RTMP in at --rtmp-addr (rtmp://HOST:1935/<id> or rtmp://HOST:1935/live/<id>[/<key>]), HLS "
                    "out at --http-addr: /stream/<id>.m3u8 (master), /stream/<id>/<rendition>.m3u8, "
                    "/stream/<id>/<rendition>/<seq>.ts, /stream/<id>/<rendition>.ts (continuous TS). "
                    "See docs/hls.md.",
    )  # fmt: skip
    parser.add_argument("--rtmp-addr", type=address, default=DEFAULT_RTMP_ADDR, metavar="HOST:PORT",
                        help="where publishers push RTMP; 0.0.0.0:1935 to take remote publishers "
                             f"(default {DEFAULT_RTMP_ADDR})")  # fmt: skip
    parser.add_argument("--http-addr", type=address, default=DEFAULT_HTTP_ADDR, metavar="HOST:PORT",
                        help=f"where players get HLS (default {DEFAULT_HTTP_ADDR})")
    parser.add_argument("--publish-key", type=publish_key, metavar="KEY",
                        help="refuse a push whose path does not end in /KEY (rtmp://HOST/live/<id>/KEY) "
                             "(default: no key)")  # fmt: skip
    parser.add_argument("--segment-duration", type=segment_duration, default=DEFAULT_SEGMENT_DURATION,
                        metavar="SECONDS",
                        help="target segment length; segments are cut on keyframes, so a segment lasts at "
                             f"least this and up to the next keyframe ({MIN_SEGMENT_DURATION:g}..."
                             f"{MAX_SEGMENT_DURATION:g}, default {DEFAULT_SEGMENT_DURATION:g})")  # fmt: skip
    parser.add_argument("--transcoding-options", type=transcoding_options, default=[], metavar="NAMES|FILE",
                        help="renditions besides the source: Livepeer profile names, comma separated "
                             "(P144p30fps16x9,P240p30fps16x9,...), or a JSON file of {name, width, height, "
                             "bitrate, fps, gop} entries (default: the source only)")  # fmt: skip
    parser.add_argument("--current-manifest", action="store_true",
                        help="serve /stream/current.m3u8: the master playlist of the last stream to start "
                             "(default: off)")  # fmt: skip
    parser.add_argument("--reconnect-grace", type=positive_float, default=DEFAULT_RECONNECT_GRACE,
                        metavar="SECONDS",
                        help="a publisher that comes back to its id within this time continues the same playlists "
                             "(after a discontinuity); after it the stream ends (#EXT-X-ENDLIST) "
                             f"(default {DEFAULT_RECONNECT_GRACE:g})")  # fmt: skip
    parser.add_argument("--max-streams", type=positive_int, default=DEFAULT_MAX_STREAMS, metavar="N",
                        help="streams at once, live or just ended; a publish beyond it is refused "
                             f"(default {DEFAULT_MAX_STREAMS})")  # fmt: skip
    group = parser.add_argument_group("RTMP limits")
    group.add_argument("--max-rtmp-connections", type=positive_int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                       help=f"RTMP connections at once; more are closed at accept (default {DEFAULT_MAX_CONNECTIONS})")
    group.add_argument("--max-rtmp-message", type=positive_int, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="BYTES",
                       help="largest RTMP message (one video frame) taken; a larger one closes the connection "
                            f"(default {DEFAULT_MAX_MESSAGE_BYTES})")  # fmt: skip
    group.add_argument("--publish-timeout", type=positive_float, default=DEFAULT_PUBLISH_TIMEOUT, metavar="SECONDS",
                       help="seconds from connect to an accepted publish (handshake, connect, publish) "
                            f"(default {DEFAULT_PUBLISH_TIMEOUT:g})")  # fmt: skip
    group.add_argument("--stall-timeout", type=positive_float, default=DEFAULT_STALL_TIMEOUT, metavar="SECONDS",
                       help="a publisher that sends no audio or video for this long is closed "
                            f"(default {DEFAULT_STALL_TIMEOUT:g})")  # fmt: skip
    add_log_options(parser)
    add_p2p_arguments(parser)  # --p2p and its options (commands/p2p_options.py)
    add_registry_options(parser)  # the broadcaster registers, and with --p2p so does every rendition node
    parser.set_defaults(func=run_broadcaster, preflight=preflight_broadcaster, prepare=start_logging,
                        command_prog=parser.prog)  # fmt: skip


def preflight_broadcaster(args: argparse.Namespace) -> None:
    check_log_file("--log-file", args.log_file)
    rtmp_host, rtmp_port = args.rtmp_addr
    http_host, http_port = args.http_addr
    if (rtmp_host, rtmp_port) == (http_host, http_port) and rtmp_port != 0:
        raise UsageError("--http-addr", f"{http_host}:{http_port}", "is the same as --rtmp-addr")
    check_listen(rtmp_host, rtmp_port, bind_flag="--rtmp-addr", port_flag="--rtmp-addr")
    check_listen(http_host, http_port, bind_flag="--http-addr", port_flag="--http-addr")


def config_from_args(args: argparse.Namespace) -> BroadcasterConfig:
    rtmp_host, rtmp_port = args.rtmp_addr
    http_host, http_port = args.http_addr
    return BroadcasterConfig(
        rtmp=RtmpServerConfig(host=rtmp_host, port=rtmp_port, publish_key=args.publish_key,
                              max_connections=args.max_rtmp_connections, max_message_bytes=args.max_rtmp_message,
                              publish_timeout=args.publish_timeout, stall_timeout=args.stall_timeout),
        registry=RegistryConfig(profiles=tuple(args.transcoding_options), segment_duration=args.segment_duration,
                                reconnect_grace=args.reconnect_grace, max_streams=args.max_streams),
        http_host=http_host, http_port=http_port, current_manifest=args.current_manifest,
    )  # fmt: skip


# Hooks run once the registry exists and before the servers start (part E's --p2p plugs into
# registry.on_stream_started / on_stream_ended here). Each gets the parsed flags and the registry and returns a
# cleanup, awaited at shutdown after the RTMP server and the registry have stopped.
StartHook = Callable[[argparse.Namespace, StreamRegistry], Awaitable[Callable[[], Awaitable[None]]]]
START_HOOKS: list[StartHook] = []


def run_broadcaster(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    p2p = p2p_config_from_args(args, ts_base_url(config.http_host, config.http_port)) if args.p2p else None
    failed: list[str] = []
    nodes = P2PBroadcaster(p2p) if p2p is not None else None
    origin = ts_base_url(config.http_host, config.http_port)
    if config.http_host in WILDCARDS:
        origin = f"http://{format_address(advertised_host(args, config.http_host), config.http_port)}"
    streams: list[StreamRegistry] = []
    reporter = BroadcasterReporter(http=origin, content_ids=nodes.content_ids if nodes is not None else list,
                                   streams=lambda: sum(len(r.streams()) for r in streams),
                                   channels=nodes.channels if nodes is not None else list)  # fmt: skip

    async def main(stop: asyncio.Event) -> None:
        registry = StreamRegistry(config.registry)
        streams.append(registry)
        cleanups: list[Callable[[], Awaitable[None]]] = []
        rtmp = RtmpServer(config.rtmp, registry)
        from swarmcast.broadcaster.origin_http import make_origin_app  # noqa: PLC0415

        app = make_origin_app(registry, current_manifest=config.current_manifest)
        if p2p is not None:  # rendition nodes on the registry's hooks, /stream/<id>.acechannel on the origin
            cleanups.append(attach_p2p(p2p, registry, app, nodes))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            for hook in START_HOOKS:
                cleanups.append(await hook(args, registry))
            try:
                await rtmp.start()
            except OSError as error:
                failed.append(_listen_error("--rtmp-addr", config.rtmp.host, config.rtmp.port, error))
                return
            try:
                await web.TCPSite(runner, config.http_host, config.http_port).start()
            except OSError as error:
                failed.append(_listen_error("--http-addr", config.http_host, config.http_port, error))
                return
            profiles = ", ".join(p.name for p in config.registry.profiles) or "none"
            log.info("broadcaster: RTMP on rtmp://%s:%d/live/<id>, HLS on http://%s:%d/stream/<id>.m3u8; "
                     "transcoding: %s; segments of %g s", config.rtmp.host, rtmp.port, config.http_host,
                     config.http_port, profiles, config.registry.segment_duration)  # fmt: skip
            await stop.wait()
        finally:
            await rtmp.close()
            await registry.close()
            for cleanup in reversed(cleanups):
                try:
                    await cleanup()
                except Exception:
                    log.exception("a broadcaster hook's cleanup failed")
            await runner.cleanup()

    asyncio.run(run_until_stopped(with_registry(main, endpoint_from_args(args), reporter.describe,
                                                reporter.figures)))  # fmt: skip
    if failed:
        print(f"swarmcast broadcaster: error: {failed[0]}", file=sys.stderr)
        return 2
    return 0


def _listen_error(flag: str, host: str, port: int, error: OSError) -> str:
    why = "already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
    return f"argument {flag}: {host}:{port}: cannot listen: {why}"
