"""``swarmcast node source|support|startup``: the broadcaster's nodes, with the Ace Stream engine's flags."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from dataclasses import replace
from pathlib import Path

from swarmcast.commands.hls_support import add_hls_options, hls_settings, private_hls_file, signer_config
from swarmcast.commands.options import (
    MIN_PIECE_SIZE,
    add_common,
    address,
    common_from_args,
    non_negative_float,
    non_negative_int,
    piece_size,
    port,
    positive_float,
)
from swarmcast.commands.registry_flags import add_registry_options, node_main
from swarmcast.credential import CREDENTIAL_LIFETIME, MAX_CREDENTIAL_LIFETIME, MIN_CREDENTIAL_LIFETIME
from swarmcast.discovery.metatracker_protocol import check_metatracker_url
from swarmcast.ingest.hls import HlsSettings
from swarmcast.ingest.http_ts import DEFAULT_READ_TIMEOUT
from swarmcast.ingest.select import source_problem
from swarmcast.node.access import FilterError, load_access_filter
from swarmcast.node.config import AccessConfig, SourceConfig, StandbyConfig, StartupConfig, SupportConfig
from swarmcast.node.hls_signer import HlsSignerNode
from swarmcast.node.joiner import JoinError
from swarmcast.node.lifecycle import run_until_stopped
from swarmcast.node.source import SourceNode
from swarmcast.node.standby import StandbyError, StandbyNode
from swarmcast.node.startup import StartupNode
from swarmcast.node.support import SupportNode
from swarmcast.swarm.peer import Address
from swarmcast.swarm.rotation import DEFAULT_HANDOFF_AFTER, DEFAULT_HANDOFF_BYTES, RotationConfig
from swarmcast.swarm.standby import DEFAULT_TAKEOVER_AFTER
from swarmcast.transport import CATEGORIES, MAX_METATRACKERS, MAX_STARTUP_NODES, QUALITIES, TransportError
from swarmcast.wire.messages import MAX_PIECE_SIZE

log = logging.getLogger("swarmcast.node")


def category(text: str) -> str:
    if text not in CATEGORIES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a category; allowed: {', '.join(CATEGORIES)}")
    return text


def _name(text: str) -> str:
    if not text or "/" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable file name")
    return text


def support_node(text: str) -> Address:
    """``IP`` or ``IP:PORT`` (``[v6]:PORT``); port 0 or none = any listen port from that IP."""
    host, port_text = text, "0"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else (rest or "0")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP or IP:PORT") from None
    return ip, port(port_text)


def metatracker_url(text: str) -> str:
    try:
        return check_metatracker_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


MIN_READ_TIMEOUT = 1.0  # below, a normal gap between an encoder's packets could count as a lost input
MAX_READ_TIMEOUT = 3600.0


def read_timeout(text: str) -> float:
    value = positive_float(text)
    if not MIN_READ_TIMEOUT <= value <= MAX_READ_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{value:g} is not in {MIN_READ_TIMEOUT:g}..{MAX_READ_TIMEOUT:g} (seconds)")
    return value


def credential_lifetime(text: str) -> float:
    value = positive_float(text)
    if not MIN_CREDENTIAL_LIFETIME <= value <= MAX_CREDENTIAL_LIFETIME:
        bounds = f"{MIN_CREDENTIAL_LIFETIME:g}..{MAX_CREDENTIAL_LIFETIME:g}"
        raise argparse.ArgumentTypeError(f"{value:g} is not in {bounds}")
    return value


def ip_and_port(text: str) -> Address:
    """IP:PORT with an IP literal: the standby recognises its primary among its peers by address."""
    host, port_number = address(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not IP:PORT (an IP address, not a host name)") from None
    if port_number == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 names no node")
    return host, port_number


def add_follower_options(parser: argparse.ArgumentParser, *, download_from_default: str = "from any peer") -> None:
    """The options of a node that follows a broadcast (support and start nodes)."""
    parser.add_argument("--url", required=True, metavar="URL",
                        help="the transport file: a path, or an http(s) URL such as "
                             "http://SOURCE:7764/app/[TOKEN/]get_transport_file?format=raw (required)")
    parser.add_argument("--download-from", type=address, action="append", default=[], metavar="IP:PORT",
                        help=f"download only from these nodes (repeatable; default: {download_from_default})")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = subparsers.add_parser("node", help="run a broadcaster's node (source, support or startup)",
                                 description="A broadcaster's node. The same program runs as acestreamengine "
                                 "with Ace Stream's mode flags (docs/operators.md).")  # fmt: skip
    roles = node.add_subparsers(dest="role", required=True)

    source = roles.add_parser("source", help="ingest a stream, sign it into pieces and seed the swarm",
                              description="The source node of one broadcast. Ace Stream's spelling: "
                              "acestreamengine --stream-source-node ...")  # fmt: skip
    add_common(source, default_port=7764, default_slots=8)
    source.add_argument("--source", required=True, metavar="URL",
                        help="the input: MPEG-TS over HTTP(S), an HLS playlist URL, or rtmp://HOST/APP/NAME (pulled) "
                        "(required)")
    source.add_argument("--name", type=_name, help="file name of the broadcast: NAME.acelive, NAME.sauth, "
                        "NAME.restart (default: derived from --title)")  # fmt: skip
    source.add_argument("--title", required=True, help="the broadcast's title players show (required)")
    source.add_argument("--bitrate", type=non_negative_int, default=0, metavar="BYTES_PER_S",
                        help="the stream's bitrate in BYTES per second (Ace Stream's unit; testsrc's --bitrate is "
                             "in bits/s); 0 = measure the input for at most 2 s (default 0)")  # fmt: skip
    source.add_argument("--piecesize", type=piece_size, default=0, metavar="BYTES",
                        help=f"largest piece in bytes, {MIN_PIECE_SIZE}..{MAX_PIECE_SIZE}, rounded down to whole "
                             "188-byte TS packets; 0 = about half a second of the bitrate (default 0)")
    source.add_argument("--quality", choices=QUALITIES, default="SD", help="SD or HD (default %(default)s)")
    source.add_argument("--category", type=category, action="append", default=[], metavar="CATEGORY",
                        help=f"a category of the broadcast (repeatable), one of: {', '.join(CATEGORIES)} "
                             "(default: none)")  # fmt: skip
    source.add_argument("--skip-internal-tracker", action="store_true",
                        help="do not serve a tracker at /announce on --port (default: serve it)")
    source.add_argument("--publish-dir", type=Path, default=Path(), metavar="DIR",
                        help="where NAME.acelive, the transport file, is written (default: the current directory)")
    source.add_argument("--metadata-dir", type=Path, metavar="DIR",
                        help="where NAME.sauth (the key) and NAME.restart live (default: --state-dir, else "
                             "--publish-dir)")  # fmt: skip
    source.add_argument("--provider-key", default="", metavar="KEY",
                        help="the broadcaster's provider key, written into the transport file (default: none)")
    source.add_argument("--sid", default="", metavar="ID",
                        help="the provider's id of this stream (with --provider-key; kept in the node's log, not "
                             "yet in the transport file) (default: none)")  # fmt: skip
    source.add_argument("--support-node", type=support_node, action="append", default=[], metavar="IP[:PORT]",
                        help="a support node of this broadcast (repeatable): the source grants it a credential "
                             "and serves it first; without PORT any listen port from that IP "
                             "(default: none)")  # fmt: skip
    source.add_argument("--credential-lifetime", type=credential_lifetime, default=CREDENTIAL_LIFETIME,
                        metavar="SECONDS", help="how long the source's and support nodes' credentials are valid; "
                        f"refreshed at half ({MIN_CREDENTIAL_LIFETIME:.0f}..{MAX_CREDENTIAL_LIFETIME:.0f}, "
                        f"default {CREDENTIAL_LIFETIME:.0f})")  # fmt: skip
    source.add_argument("--source-reconnect-interval", type=positive_float, default=1.0, metavar="SECONDS",
                        help="seconds between attempts to reach a lost input; fixed, never longer (default 1)")
    source.add_argument("--source-read-timeout", type=read_timeout, default=DEFAULT_READ_TIMEOUT, metavar="SECONDS",
                        help="seconds without a byte from the input before it counts as lost and is reconnected "
                             f"({MIN_READ_TIMEOUT:g}..{MAX_READ_TIMEOUT:g}, default {DEFAULT_READ_TIMEOUT:g})")
    source.add_argument("--permanent", action="store_true",
                        help="keep the source running through any input outage, however long; swarmcast's source "
                             "always does (it retries its input for ever), the flag is accepted for Ace Stream "
                             "command lines (default: off, which is the same)")  # fmt: skip
    source.add_argument("--standby-for", type=ip_and_port, metavar="IP:PORT",
                        help="run as the hot standby of the source node at IP:PORT: follow it and take over "
                             "signing when it is gone (needs its .sauth in --metadata-dir; see docs/design.md) "
                             "(default: none)")
    source.add_argument("--standby-takeover-after", type=positive_float, default=DEFAULT_TAKEOVER_AFTER,
                        metavar="SECONDS", help="with --standby-for: how long the primary must be unreachable "
                        f"before the standby signs (default {DEFAULT_TAKEOVER_AFTER:g})")
    source.add_argument("--startup-node", type=ip_and_port, action="append", default=[], metavar="IP:PORT",
                        help="a start node of this broadcast, written into the transport file (repeatable; "
                             "default: none)")
    source.add_argument("--metatracker", type=metatracker_url, action="append", default=[], metavar="URL",
                        help="a metatracker, written into the transport file: nodes and engines ask it for "
                             "trackers and start nodes (repeatable; default: none)")  # fmt: skip
    add_hls_options(source, support=False)
    add_registry_options(source, source=True)
    source.set_defaults(func=run_source)

    support = roles.add_parser("support", help="follow a broadcast and feed the swarm",
                               description="A support node of one broadcast. Ace Stream's spelling: "
                               "acestreamengine --stream-support-node ...")  # fmt: skip
    # A support node is the broadcaster's server: it serves every peer it accepts (--max-peers, default 60);
    # its capacity is bounded by --upload-limit, not by choking viewers that have nowhere else to go.
    add_common(support, default_port=8621, default_slots=60)
    add_follower_options(support)
    add_hls_options(support, support=True)
    add_registry_options(support)
    support.set_defaults(func=run_support)

    # A start node takes a support node's options (Ace Stream's --stream-startup-node maps here) and two of its own.
    startup = roles.add_parser("startup", help="a support node that hands off started viewers so newcomers start "
                               "at once (docs/operators.md, Start nodes)")  # fmt: skip
    add_common(startup, default_port=8621, default_slots=60)
    add_follower_options(startup, download_from_default="the node that served --url")
    startup.add_argument("--startup-handoff-bytes", type=non_negative_int, default=DEFAULT_HANDOFF_BYTES,
                         metavar="BYTES", help="when full, a peer this node has served this many bytes (and that "
                         "plays on without it) may be dropped for a newcomer "
                         f"(default {DEFAULT_HANDOFF_BYTES}, about 8 s of a 2 Mbit/s stream)")  # fmt: skip
    startup.add_argument("--startup-handoff-after", type=non_negative_float, default=DEFAULT_HANDOFF_AFTER,
                         metavar="SECONDS", help="when full, a peer connected this long (and that plays on without "
                         "this node) may be dropped for a newcomer whatever it got; 0 = --startup-handoff-bytes only "
                         f"(default {DEFAULT_HANDOFF_AFTER:g})")  # fmt: skip
    add_registry_options(startup)
    startup.set_defaults(func=run_startup)


def _default_name(title: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in title.strip()).strip("_")
    return cleaned or "broadcast"


def _filter_refused(command_prog: str, access: AccessConfig) -> bool:
    """A filter (or database) that cannot be used stops the node before it starts: one line, exit 2."""
    try:
        load_access_filter(access)
    except FilterError as error:
        text = str(error)
        named = text if text.startswith("--geoip-db") else f"--ip-filter-config {text}"
        print(f"{command_prog}: error: {named}", file=sys.stderr)
        return True
    return False


def discovery_count_error(startup_nodes: list[Address], metatrackers: list[str]) -> str | None:
    """What the transport file cannot hold (repeats do not count), as the error line; None when all fits.

    For every command line that fills SourceConfig.startup_nodes / metatrackers (also the acestreamengine one)."""
    nodes = list(dict.fromkeys(startup_nodes))
    if len(nodes) > MAX_STARTUP_NODES:
        return f"--startup-node given {len(nodes)} times: the transport file holds at most {MAX_STARTUP_NODES}"
    urls = list(dict.fromkeys(metatrackers))
    if len(urls) > MAX_METATRACKERS:
        return f"--metatracker given {len(urls)} times: the transport file holds at most {MAX_METATRACKERS}"
    return None


def run_source(args: argparse.Namespace) -> int:
    problem = source_problem(args.source)
    if problem is not None:  # at the edge: retrying a URL we can never read would only fill the log
        print(f"{args.command_prog}: error: argument --source: {problem}", file=sys.stderr)
        return 2
    problem = discovery_count_error(args.startup_node, args.metatracker)
    if problem is not None:
        print(f"{args.command_prog}: error: {problem}", file=sys.stderr)
        return 2
    if args.sid and not args.provider_key:
        log.warning("--sid %s is used only with --provider-key: ignored", args.sid)
    elif args.sid:
        log.info("provider stream id (--sid) %s", args.sid)
    standby: StandbyConfig | None = None
    if args.standby_for is not None:
        standby = StandbyConfig(primary=args.standby_for, takeover_after=args.standby_takeover_after)
    config = SourceConfig(
        common=common_from_args(args),
        source_url=args.source,
        name=args.name or _default_name(args.title),
        title=args.title,
        bitrate=args.bitrate,
        quality=args.quality,
        categories=tuple(args.category),
        skip_internal_tracker=args.skip_internal_tracker,
        publish_dir=args.publish_dir,
        metadata_dir=args.metadata_dir or args.state_dir or args.publish_dir,
        provider_key=args.provider_key,
        source_reconnect_interval=args.source_reconnect_interval,
        source_read_timeout=args.source_read_timeout,
        permanent=args.permanent,
        support_nodes=tuple(args.support_node),
        credential_lifetime=args.credential_lifetime,
        standby=standby,
        startup_nodes=tuple(dict.fromkeys(args.startup_node)),
        metatrackers=tuple(dict.fromkeys(args.metatracker)),
        piece_size=args.piecesize,
        sid=args.sid if args.provider_key else "",
        hls=replace(hls_settings(args), reconnect_interval=args.source_reconnect_interval),
    )
    if _filter_refused(args.command_prog, config.common.access):
        return 2
    if standby is None:
        node = SourceNode(config)
        try:
            asyncio.run(run_until_stopped(node_main(node, node.run, args, name=config.name)))
        except FilterError as error:  # the file changed since the check above
            log.error("%s", error)
            return 2
        return 0
    key_path = config.metadata_dir / f"{config.name}.sauth"
    if not key_path.is_file():
        # A standby with a fresh key would sign pieces nobody accepts: the key must be the primary's.
        print(f"{args.command_prog}: error: --standby-for needs the broadcast's key, and {key_path} does not "
              "exist (copy the primary's .sauth there)", file=sys.stderr)  # fmt: skip
        return 2
    standby_node = StandbyNode(config)
    try:
        asyncio.run(run_until_stopped(node_main(standby_node, standby_node.run, args, name=config.name)))
    except StandbyError as error:
        log.error("%s", error)
        return 2
    return 0


def _run_follower(node: SupportNode, args: argparse.Namespace) -> int:
    """Run a support or start node until it is stopped; a broadcast it cannot join is one line, exit 2."""
    try:
        asyncio.run(run_until_stopped(node_main(node, node.run, args)))
    except JoinError as error:
        log.error("cannot join: %s", error)
        return 2
    except FilterError as error:  # the file changed since the check before the start
        log.error("%s", error)
        return 2
    return 0


def run_support(args: argparse.Namespace) -> int:
    try:
        private = private_hls_file(args.url)
        signer = signer_config(args, private) if private is not None else None
    except TransportError as error:
        print(f"{args.command_prog}: error: argument --url: {error}", file=sys.stderr)
        return 2
    if private is not None and signer is not None:
        if _filter_refused(args.command_prog, signer.common.access):
            return 2
        try:
            node = HlsSignerNode(signer, private, hls=signer.hls or HlsSettings(),
                                 hide_segments=args.hide_hls_segments)  # fmt: skip
        except (TransportError, ValueError) as error:
            print(f"{args.command_prog}: error: {error}", file=sys.stderr)
            return 2
        log.info("HLS support node: signing %s from %s", private.descriptor.infohash, private.hls_manifest)
        try:
            asyncio.run(run_until_stopped(node_main(node, node.run, args)))
        except FilterError as error:
            log.error("%s", error)
            return 2
        return 0
    if args.public_transport_file is not None:
        log.warning("--public-transport-file is used only with a private HLS file as --url: ignored")
    config = SupportConfig(common=common_from_args(args), url=args.url, download_from=tuple(args.download_from))
    if _filter_refused(args.command_prog, config.common.access):
        return 2
    return _run_follower(SupportNode(config), args)


def run_startup(args: argparse.Namespace) -> int:
    support = SupportConfig(common=common_from_args(args), url=args.url, download_from=tuple(args.download_from))
    if _filter_refused(args.command_prog, support.common.access):
        return 2
    rotation = RotationConfig(handoff_bytes=args.startup_handoff_bytes, handoff_after=args.startup_handoff_after)
    return _run_follower(StartupNode(StartupConfig(support=support, rotation=rotation)), args)
