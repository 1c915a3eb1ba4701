"""Argument types and shared options; each type's error names the bad value (argparse adds the flag)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from swarmcast.node.config import DEFAULT_LIVE_CACHE_SIZE, CacheConfig, NodeCommon
from swarmcast.swarm.peer import Address


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argument type for a whole number in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


port = bounded_int(0, 65535)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def address(text: str) -> Address:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT")
    return host.strip("[]"), port(port_text)


def tracker_url(text: str) -> str:
    if not text.startswith(("http://", "https://", "udp://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http://, https:// or udp:// tracker URL")
    return text


def kilobytes_per_second(text: str) -> int:
    """``--upload-limit`` in KB/s (1 KB = 1000 bytes), as the Ace Stream engine takes it; 0 = no limit. Bytes/s out."""
    return non_negative_int(text) * 1000


def add_upload_options(parser: argparse.ArgumentParser, *, default_slots: int) -> None:
    parser.add_argument("--upload-slots", type=non_negative_int, default=default_slots,
                        help=f"peers served at once; 0 = upload nothing (default {default_slots})")  # fmt: skip
    parser.add_argument("--upload-limit", type=kilobytes_per_second, default=0,
                        help="upload limit in KB/s (1 KB = 1000 bytes); 0 = no limit (default)")  # fmt: skip


def add_common(parser: argparse.ArgumentParser, *, default_port: int, default_slots: int) -> None:
    parser.add_argument("--port", type=port, default=default_port, help="P2P and web interface port")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--tracker", type=tracker_url, action="append", default=[], help="tracker URL (repeatable)")
    parser.add_argument("--cache-dir", type=Path, help="directory of the disk cache")
    parser.add_argument("--live-cache-type", choices=("memory", "disk"), default="memory")
    parser.add_argument("--live-cache-size", type=positive_int, default=DEFAULT_LIVE_CACHE_SIZE,
                        help="hard cap of the live cache, bytes")  # fmt: skip
    parser.add_argument("--pid-file-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--state-dir", type=Path, help="directory for node state")
    parser.add_argument("--service-access-token", help="token in /app/<token>/... URLs")
    add_upload_options(parser, default_slots=default_slots)
    parser.add_argument("--max-peers", type=positive_int, default=60)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--debug", action="store_true", help="verbose logging")


def common_from_args(args: argparse.Namespace) -> NodeCommon:
    cache = CacheConfig(cache_type=args.live_cache_type, max_bytes=args.live_cache_size, directory=args.cache_dir)
    return NodeCommon(
        port=args.port,
        bind=args.bind,
        trackers=tuple(args.tracker),
        cache=cache,
        pid_file_dir=args.pid_file_dir,
        service_access_token=args.service_access_token,
        upload_slots=args.upload_slots,
        upload_limit=args.upload_limit,
        max_peers=args.max_peers,
    )
