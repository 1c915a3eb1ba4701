"""Argument types and shared options; each type's error names the bad value (argparse adds the flag)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
from collections.abc import Callable
from pathlib import Path

from swarmcast.commands.preflight import preflight_node
from swarmcast.logsetup import (
    DEFAULT_LOG_BACKUP_COUNT,
    DEFAULT_LOG_MAX_SIZE,
    LogConfig,
    configure_logging,
    parse_log_modules,
)
from swarmcast.media.ts import TS_PACKET_SIZE
from swarmcast.node.admission import AdmissionConfig
from swarmcast.node.config import DEFAULT_LIVE_CACHE_SIZE, AccessConfig, CacheConfig, MonitorConfig, NodeCommon
from swarmcast.swarm.peer import Address
from swarmcast.wire.messages import MAX_PIECE_SIZE

log = logging.getLogger("swarmcast")
MIN_PIECE_SIZE = 64 * TS_PACKET_SIZE  # the smallest piece the source picks by itself (swarm/cutter.py)


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


def finite_float(text: str) -> float:
    """A number; ``nan`` and ``inf`` are not (float() takes them, and every comparison with nan is false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is negative")
    return value


def zero_or_one(text: str) -> bool:
    """Ace Stream's boolean options take ``0`` or ``1``."""
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or 1")
    return text == "1"


def ip_literal(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def ip_address_and_port(text: str) -> Address:
    """IP:PORT (``[v6]:PORT``) with an IP literal: the access lists filter by IP."""
    host, port_number = address(text)
    return ip_literal(host), port_number


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
    parser.add_argument("--upload-slots", type=non_negative_int, default=default_slots, metavar="N",
                        help=f"peers served at once; 0 = upload nothing (default {default_slots})")  # fmt: skip
    parser.add_argument("--upload-limit", type=kilobytes_per_second, default=0, metavar="KB_PER_S",
                        help="upload limit in KB/s (1 KB = 1000 bytes); 0 = no limit (default)")  # fmt: skip


def add_admission_options(parser: argparse.ArgumentParser) -> None:
    """Per-address and total connection limits of the shared port (docs/design.md, "Admission")."""
    d = AdmissionConfig()
    group = parser.add_argument_group("admission (limits per remote address and in total)")
    group.add_argument("--max-connections", type=positive_int, default=d.max_connections,
                       metavar="N",
                       help=f"peer connections in total, inbound and outbound (default {d.max_connections})")
    group.add_argument("--max-connections-per-ip", type=positive_int, default=d.max_connections_per_ip,
                       metavar="N",
                       help="inbound peer connections from one address (an IPv6 /64), every broadcast together "
                            f"(default {d.max_connections_per_ip})")
    group.add_argument("--max-peers-per-ip", type=positive_int, default=d.max_peers_per_ip,
                       metavar="N",
                       help="peers (peer ids) one address may have in one broadcast; a household NAT holds a few "
                            f"viewers (default {d.max_peers_per_ip})")
    group.add_argument("--max-pending-connections", type=positive_int, default=d.max_pending,
                       metavar="N",
                       help="connections still in their handshake, in total; when full the oldest is dropped "
                            f"(default {d.max_pending})")
    group.add_argument("--max-pending-per-ip", type=positive_int, default=d.max_pending_per_ip,
                       metavar="N",
                       help=f"connections still in their handshake from one address (default {d.max_pending_per_ip})")
    group.add_argument("--max-connection-rate-per-ip", type=positive_float, default=d.connection_rate_per_ip,
                       metavar="PER_S",
                       help="new connections per second from one address, bursts of 3 s allowed "
                            f"(default {d.connection_rate_per_ip:g})")
    group.add_argument("--max-http-connections", type=positive_int, default=d.max_http_connections,
                       metavar="N",
                       help=f"web-interface connections in total (default {d.max_http_connections})")
    group.add_argument("--max-http-connections-per-ip", type=positive_int, default=d.max_http_connections_per_ip,
                       metavar="N",
                       help=f"web-interface connections from one address (default {d.max_http_connections_per_ip})")
    group.add_argument("--handshake-timeout", type=positive_float, default=d.handshake_timeout,
                       metavar="SECONDS",
                       help="seconds a peer connection may take to handshake after its first bytes "
                            f"(default {d.handshake_timeout:g})")
    group.add_argument("--http-header-timeout", type=positive_float, default=d.http_header_timeout,
                       metavar="SECONDS",
                       help=f"seconds an HTTP client may take to send its request headers (default "
                            f"{d.http_header_timeout:g})")  # fmt: skip


def admission_from_args(args: argparse.Namespace) -> AdmissionConfig:
    rate = args.max_connection_rate_per_ip
    return AdmissionConfig(
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        max_peers_per_ip=args.max_peers_per_ip,
        max_pending=args.max_pending_connections,
        max_pending_per_ip=args.max_pending_per_ip,
        connection_rate_per_ip=rate,
        connection_burst_per_ip=max(1, round(rate * 3)),
        max_http_connections=args.max_http_connections,
        max_http_connections_per_ip=args.max_http_connections_per_ip,
        handshake_timeout=args.handshake_timeout,
        http_header_timeout=args.http_header_timeout,
    )


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """Who may connect, and the web interface's monitor (docs/operators.md)."""
    d, m = AccessConfig(), MonitorConfig()
    group = parser.add_argument_group("access and monitoring (Ace Stream's node options)")
    group.add_argument("--service-remote-access", action="store_true",
                       help="let addresses other than loopback (and --monitor-node-ip) use the web interface "
                            "(default: loopback only)")
    group.add_argument("--monitor-node-ip", type=ip_literal, action="append", default=[], metavar="IP",
                       help="an address that may use the web interface and reach a private node (repeatable; "
                            "default: none)")
    group.add_argument("--private-node", type=zero_or_one, default=d.private, metavar="0|1",
                       help="1: only --download-from, --upload-to and --monitor-node-ip addresses may connect "
                            "(default 0)")  # fmt: skip
    group.add_argument("--upload-to", type=ip_address_and_port, action="append", default=[], metavar="IP:PORT",
                       help="upload only to these nodes (repeatable; filtered by IP, the port is ignored; "
                            "default: to any peer)")
    group.add_argument("--ip-filter-config", type=Path, metavar="FILE",
                       help="Ace Stream's JSON traffic filter (groups, whitelist, blacklist, limit_groups); "
                            "re-read on SIGHUP (default: none)")  # fmt: skip
    group.add_argument("--geoip-db", type=Path, metavar="PATH",
                       help="MaxMind DB (.mmdb) resolving the filter's countries (default: none)")
    group.add_argument("--close-connections-from-same-peer", type=zero_or_one, default=d.one_connection_per_ip,
                       metavar="0|1", help="1: keep one connection per peer address (default 0)")
    group.add_argument("--stats-report-interval", type=positive_float, default=m.stats_report_interval,
                       metavar="SECONDS", help="seconds between refreshes of /app/monitor's figures "
                       f"(default {m.stats_report_interval:g})")  # fmt: skip
    group.add_argument("--stats-report-peers", action="store_true",
                       help="list each connected peer in /app/monitor (default: an empty list)")


def access_from_args(args: argparse.Namespace) -> AccessConfig:
    return AccessConfig(
        remote_access=args.service_remote_access,
        monitor_ips=tuple(args.monitor_node_ip),
        private=args.private_node,
        upload_to=tuple(args.upload_to),
        ip_filter_config=args.ip_filter_config,
        geoip_db=args.geoip_db,
        one_connection_per_ip=args.close_connections_from_same_peer,
    )


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """Logging, with the Ace Stream engine's options (docs/operators.md, "Command line (acestreamengine)")."""
    group = parser.add_argument_group("logging (Ace Stream's options; any --debug-* switch also turns on debug)")
    group.add_argument("--log-file", type=Path, metavar="FILE", help="log here instead of to stderr (default: stderr)")
    group.add_argument("--log-max-size", type=non_negative_int, default=DEFAULT_LOG_MAX_SIZE, metavar="BYTES",
                       help="rotate --log-file past this size; 0 = never (default %(default)s)")  # fmt: skip
    group.add_argument("--log-backup-count", type=non_negative_int, default=DEFAULT_LOG_BACKUP_COUNT, metavar="N",
                       help="rotated log files kept (FILE.1 ... FILE.N); 0 = do not rotate (default %(default)s)")
    group.add_argument("--log-debug", type=non_negative_int, default=0, metavar="LEVEL",
                       help="Ace Stream's debug level: 0 = info messages, 1 or more = debug messages too "
                            "(default 0)")  # fmt: skip
    group.add_argument("--log-modules", type=log_modules, default=(), metavar="NAME:LEVEL[,...]",
                       help="a level per logger: D, I, W, E or C; root = every logger, e.g. root:D or "
                            "swarmcast.swarm:D,aiohttp:W (default: none)")  # fmt: skip
    group.add_argument("--debug", action="store_true", help="debug messages from every module (default: off)")
    group.add_argument("--lib-path", metavar="DIR",
                       help="Ace Stream's library directory: accepted and ignored (swarmcast needs none)")


def log_modules(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_log_modules(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def log_config_from_args(args: argparse.Namespace) -> LogConfig:
    verbose = bool(args.debug or args.log_debug or getattr(args, "debug_switches", ()))
    return LogConfig(log_file=args.log_file, verbose=verbose, modules=args.log_modules,
                     max_bytes=args.log_max_size, backup_count=args.log_backup_count)  # fmt: skip


def start_logging(args: argparse.Namespace) -> None:
    """Configure logging from the flags, then say which Ace Stream options were taken but mean nothing here."""
    configure_logging(log_config_from_args(args))
    if args.lib_path is not None:
        log.info("ignoring --lib-path %s: swarmcast needs no library path", args.lib_path)
    switches = getattr(args, "debug_switches", ())
    if switches:
        log.info("debug logging on for %s", " ".join(switches))


def piece_size(text: str) -> int:
    """``--piecesize BYTES``: whole TS packets (188 bytes each), so a value in between is rounded down; 0 = auto."""
    value = non_negative_int(text)
    if value == 0:
        return 0
    if not MIN_PIECE_SIZE <= value <= MAX_PIECE_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is not in {MIN_PIECE_SIZE}..{MAX_PIECE_SIZE} bytes")
    return value - value % TS_PACKET_SIZE


def add_common(parser: argparse.ArgumentParser, *, default_port: int, default_slots: int) -> None:
    """The options every node role shares (source, support, start node), in Ace Stream's spelling."""
    parser.add_argument("--port", type=port, default=default_port,
                        help="TCP port of the peer protocol and the web interface (/app/...); 0 = any free port "
                             "(default %(default)s)")  # fmt: skip
    parser.add_argument("--bind", default="0.0.0.0", metavar="IP",
                        help="address to listen on (default %(default)s = every IPv4 address)")
    parser.add_argument("--host", metavar="IP",
                        help="Ace Stream's name for --bind; wins over it when given (default: none)")
    parser.add_argument("--tracker", type=tracker_url, action="append", default=[], metavar="URL",
                        help="a BitTorrent tracker, http(s):// or udp:// (repeatable; default: none)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="directory of the disk cache (--live-cache-type disk; default /tmp/swarmcast-cache)")
    parser.add_argument("--live-cache-type", choices=("memory", "disk"), default="memory",
                        help="where the live window's pieces are kept (default %(default)s)")
    parser.add_argument("--live-cache-size", "--live-mem-cache-size", dest="live_cache_size", type=positive_int,
                        default=DEFAULT_LIVE_CACHE_SIZE, metavar="BYTES",
                        help="hard cap of the live cache in bytes: the oldest pieces go first "
                             "(default %(default)s = 200 MiB)")  # fmt: skip
    parser.add_argument("--pid-file-dir", type=Path, default=Path("/tmp"), metavar="DIR",
                        help="where acestream-PORT.pid is kept while the node runs (acestreamengine-PORT.pid when "
                             "run as acestreamengine) (default %(default)s)")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="directory for node state; the source keeps its key here when --metadata-dir is not "
                             "given (default: none)")  # fmt: skip
    parser.add_argument("--service-access-token", metavar="TOKEN",
                        help="the web interface answers only /app/TOKEN/... (default: no token, /app/...)")
    add_upload_options(parser, default_slots=default_slots)
    parser.add_argument("--max-peers", type=positive_int, default=60, metavar="N",
                        help="peers connected in this broadcast at once (default %(default)s)")
    group = parser.add_argument_group("Ace Stream's core options (nearest meaning; docs/operators.md)")
    group.add_argument("--core-sandbox-max-peers", type=non_negative_int, metavar="N",
                       help="optimistic upload slots: peers served on trial, not for what they gave us "
                            "(default: a quarter of --upload-slots, at least 1)")  # fmt: skip
    group.add_argument("--core-max-fast-peers", type=non_negative_int, metavar="N",
                       help="fast-start slots: extra upload slots a peer that joined in the last 10 s may take "
                            "when the others are full (default: a quarter of --upload-slots, at least 1)")
    add_admission_options(parser)
    add_access_options(parser)
    add_log_options(parser)
    parser.set_defaults(preflight=preflight_node, prepare=start_logging, command_prog=parser.prog)


def common_from_args(args: argparse.Namespace) -> NodeCommon:
    cache = CacheConfig(cache_type=args.live_cache_type, max_bytes=args.live_cache_size, directory=args.cache_dir)
    return NodeCommon(
        port=args.port,
        bind=args.host or args.bind,
        trackers=tuple(args.tracker),
        cache=cache,
        pid_file_dir=args.pid_file_dir,
        service_access_token=args.service_access_token,
        upload_slots=args.upload_slots,
        upload_limit=args.upload_limit,
        max_peers=args.max_peers,
        optimistic_slots=args.core_sandbox_max_peers,
        newcomer_slots=args.core_max_fast_peers,
        admission=admission_from_args(args),
        access=access_from_args(args),
        monitor=MonitorConfig(args.stats_report_interval, args.stats_report_peers),
    )
