"""``swarmcast testsrc``: serve the live test signal at http://HOST:PORT/stream.ts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from pathlib import Path

from swarmcast.commands.options import bounded_int
from swarmcast.logsetup import setup_logging
from swarmcast.media.units import MAX_FPS, MIN_BITRATE, parse_bitrate, parse_size

logger = logging.getLogger(__name__)


def _bitrate_arg(text: str) -> int:
    # ArgumentTypeError (not ValueError) so argparse prints our message after "argument --bitrate:".
    try:
        bits = parse_bitrate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if bits < MIN_BITRATE:
        raise argparse.ArgumentTypeError(f"bitrate {text!r} is below the minimum of {MIN_BITRATE} bits/s")
    return bits


def _size_arg(text: str) -> tuple[int, int]:
    try:
        width, height = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    # yuv420p halves the chroma planes, so the encoder needs even dimensions.
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be even and at least 32")
    return width, height


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "testsrc",
        help="serve a live H.264/AAC MPEG-TS test signal over HTTP",
        description="Generate a live test signal (colour bars, moving box, 440 Hz tone) with a keyframe every "
        "second and serve it at http://HOST:PORT/stream.ts to any number of clients.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=bounded_int(1, 65535), default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--bitrate",
        type=_bitrate_arg,
        default="2M",
        help="total stream bitrate in BITS per second, with optional k/M/G suffix (node source's --bitrate, "
        "Ace Stream's, is in bytes/s) (default: %(default)s)",
    )
    parser.add_argument("--size", type=_size_arg, default="640x360", help="picture size WxH (default: %(default)s)")
    parser.add_argument(
        "--fps", type=bounded_int(1, MAX_FPS), default=30, help=f"frames per second, 1..{MAX_FPS} (default: 30)"
    )
    parser.add_argument("--rtmp", type=_rtmp_url, metavar="URL",
                        help="push the signal over RTMP to URL (rtmp://127.0.0.1:1935/hello_world), reconnecting "
                             "when the server goes away, instead of serving HTTP (default: serve HTTP)")  # fmt: skip
    parser.add_argument("--log-file", type=Path, default=None, help="log here instead of stderr (default: stderr)")
    parser.set_defaults(func=run)


def _rtmp_url(text: str) -> str:
    if not text.startswith("rtmp://") or len(text) > 2048:
        raise argparse.ArgumentTypeError(f"{text[:100]!r} is not an rtmp:// URL")
    return text


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_file)
    if args.rtmp is not None:
        try:
            return asyncio.run(_push(args.rtmp, bitrate=args.bitrate, size=args.size, fps=args.fps))
        except KeyboardInterrupt:
            return 0
    try:
        return asyncio.run(_main(host=args.host, port=args.port, bitrate=args.bitrate, size=args.size, fps=args.fps))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0


async def _main(host: str, port: int, bitrate: int, size: tuple[int, int], fps: int) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    def ready() -> None:
        logger.info("testsrc serving http://%s:%d/stream.ts", host, port)

    # Imported here: PyAV and numpy cost every other command (every viewer engine) 0.3 s and 50 MB at start.
    from swarmcast.media.testsignal import serve_testsrc  # noqa: PLC0415

    serve = asyncio.create_task(serve_testsrc(host, port, bitrate, size, fps, ready=ready))
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait((serve, stop_wait), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
        serve.cancel()
        # Let serve_testsrc run its cleanup; report how it ended if it ended by itself.
        results = await asyncio.gather(serve, stop_wait, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    error = results[0]
    if isinstance(error, OSError):
        logger.error("testsrc cannot listen on %s:%d: %s", host, port, error)
        return 1
    if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError):
        logger.error("testsrc failed", exc_info=error)
        return 1
    return 0


async def _push(url: str, bitrate: int, size: tuple[int, int], fps: int) -> int:
    """``--rtmp URL``: push in a thread until SIGINT/SIGTERM."""
    from swarmcast.media.testsignal import TestSignalConfig  # noqa: PLC0415 - PyAV: see _main
    from swarmcast.media.testsignal_rtmp import push_test_signal_rtmp  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    config = TestSignalConfig(bitrate=bitrate, width=size[0], height=size[1], fps=fps)
    try:
        await asyncio.to_thread(push_test_signal_rtmp, config, url, stop)
    finally:
        stop.set()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
