"""``swarmcast node source|support|startup``: the broadcaster's nodes, with the Ace Stream engine's flags."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

from swarmcast.commands.options import (
    add_common,
    address,
    common_from_args,
    non_negative_int,
    port,
    positive_float,
)
from swarmcast.credential import CREDENTIAL_LIFETIME, MAX_CREDENTIAL_LIFETIME, MIN_CREDENTIAL_LIFETIME
from swarmcast.logsetup import setup_logging
from swarmcast.node.config import SourceConfig, StandbyConfig, StartupConfig, SupportConfig
from swarmcast.node.joiner import JoinError
from swarmcast.node.lifecycle import run_until_stopped
from swarmcast.node.source import SourceNode
from swarmcast.node.standby import StandbyError, StandbyNode
from swarmcast.node.startup import StartupNode
from swarmcast.node.support import SupportNode
from swarmcast.swarm.peer import Address
from swarmcast.swarm.rotation import DEFAULT_HANDOFF_AFTER, DEFAULT_HANDOFF_BYTES, RotationConfig
from swarmcast.swarm.standby import DEFAULT_TAKEOVER_AFTER
from swarmcast.transport import CATEGORIES, QUALITIES

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
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = subparsers.add_parser("node", help="run a broadcaster's node (source, support or startup)")
    roles = node.add_subparsers(dest="role", required=True)

    source = roles.add_parser("source", help="ingest a stream, sign it into pieces and seed the swarm")
    add_common(source, default_port=7764, default_slots=8)
    source.add_argument("--source", required=True, help="MPEG-TS over HTTP URL")
    source.add_argument("--name", type=_name, help="file name of the broadcast (default: derived from --title)")
    source.add_argument("--title", required=True)
    source.add_argument("--bitrate", type=non_negative_int, default=0, help="bytes/s; 0 = detect (at most 2 s)")
    source.add_argument("--quality", choices=QUALITIES, default="SD")
    source.add_argument("--category", type=category, action="append", default=[])
    source.add_argument("--skip-internal-tracker", action="store_true")
    source.add_argument("--publish-dir", type=Path, default=Path())
    source.add_argument("--metadata-dir", type=Path,
                        help="where .sauth and .restart live (default: --state-dir, else --publish-dir)")
    source.add_argument("--provider-key", default="")
    source.add_argument("--support-node", type=support_node, action="append", default=[], metavar="IP[:PORT]",
                        help="a support node of this broadcast (repeatable): the source grants it a credential "
                             "and serves it first; without PORT any listen port from that IP")  # fmt: skip
    source.add_argument("--credential-lifetime", type=credential_lifetime, default=CREDENTIAL_LIFETIME,
                        metavar="SECONDS", help="how long the source's and support nodes' credentials are valid; "
                        f"refreshed at half ({MIN_CREDENTIAL_LIFETIME:.0f}..{MAX_CREDENTIAL_LIFETIME:.0f}, "
                        f"default {CREDENTIAL_LIFETIME:.0f})")  # fmt: skip
    source.add_argument("--source-reconnect-interval", type=positive_float, default=1.0, metavar="SECONDS",
                        help="seconds between attempts to reach a lost input; fixed, never longer (default 1)")
    source.add_argument("--standby-for", type=ip_and_port, metavar="IP:PORT",
                        help="run as the hot standby of the source node at IP:PORT: follow it and take over "
                             "signing when it is gone (needs its .sauth in --metadata-dir; see docs/design.md)")
    source.add_argument("--standby-takeover-after", type=positive_float, default=DEFAULT_TAKEOVER_AFTER,
                        metavar="SECONDS", help="with --standby-for: how long the primary must be unreachable "
                        f"before the standby signs (default {DEFAULT_TAKEOVER_AFTER:g})")
    source.add_argument("--startup-node", type=ip_and_port, action="append", default=[], metavar="IP:PORT",
                        help="a start node of this broadcast, written into the transport file (repeatable)")
    source.add_argument("--metatracker", type=metatracker_url, action="append", default=[], metavar="URL",
                        help="a metatracker, written into the transport file: nodes and engines ask it for "
                             "trackers and start nodes (repeatable)")  # fmt: skip
    source.set_defaults(func=run_source)

    support = roles.add_parser("support", help="follow a broadcast and feed the swarm")
    # A support node is the broadcaster's server: it serves every peer it accepts (--max-peers, default 60);
    # its capacity is bounded by --upload-limit, not by choking viewers that have nowhere else to go.
    add_common(support, default_port=8621, default_slots=60)
    support.add_argument("--url", required=True, help="transport file: a path or an http(s) URL")
    support.add_argument("--download-from", type=address, action="append", default=[], metavar="IP:PORT")
    support.set_defaults(func=run_support)

    # A start node takes a support node's options (Ace Stream's --stream-startup-node maps here) and two of its own.
    startup = roles.add_parser("startup", help="a support node that hands off started viewers so newcomers start "
                               "at once (docs/operators.md, Start nodes)")  # fmt: skip
    add_common(startup, default_port=8621, default_slots=60)
    startup.add_argument("--url", required=True, help="transport file: a path or an http(s) URL")
    startup.add_argument("--download-from", type=address, action="append", default=[], metavar="IP:PORT",
                         help="download only from these nodes (repeatable; default: the node that served --url)")
    startup.add_argument("--startup-handoff-bytes", type=non_negative_int, default=DEFAULT_HANDOFF_BYTES,
                         metavar="BYTES", help="when full, a peer this node has served this many bytes (and that "
                         "plays on without it) may be dropped for a newcomer "
                         f"(default {DEFAULT_HANDOFF_BYTES}, about 8 s of a 2 Mbit/s stream)")  # fmt: skip
    startup.add_argument("--startup-handoff-after", type=non_negative_float, default=DEFAULT_HANDOFF_AFTER,
                         metavar="SECONDS", help="when full, a peer connected this long (and that plays on without "
                         "this node) may be dropped for a newcomer whatever it got; 0 = --startup-handoff-bytes only "
                         f"(default {DEFAULT_HANDOFF_AFTER:g})")  # fmt: skip
    startup.set_defaults(func=run_startup)


def _default_name(title: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in title.strip()).strip("_")
    return cleaned or "broadcast"


def run_source(args: argparse.Namespace) -> int:
    setup_logging(args.log_file, verbose=args.debug)
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
        support_nodes=tuple(args.support_node),
        credential_lifetime=args.credential_lifetime,
        standby=standby,
        startup_nodes=tuple(args.startup_node),
        metatrackers=tuple(args.metatracker),
    )
    if standby is None:
        asyncio.run(run_until_stopped(SourceNode(config).run))
        return 0
    key_path = config.metadata_dir / f"{config.name}.sauth"
    if not key_path.is_file():
        # A standby with a fresh key would sign pieces nobody accepts: the key must be the primary's.
        print(f"swarmcast node source: error: --standby-for needs the broadcast's key, and {key_path} does not "
              "exist (copy the primary's .sauth there)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        asyncio.run(run_until_stopped(StandbyNode(config).run))
    except StandbyError as error:
        log.error("%s", error)
        return 2
    return 0


def run_support(args: argparse.Namespace) -> int:
    setup_logging(args.log_file, verbose=args.debug)
    config = SupportConfig(common=common_from_args(args), url=args.url, download_from=tuple(args.download_from))
    try:
        asyncio.run(run_until_stopped(SupportNode(config).run))
    except JoinError as error:
        log.error("cannot join: %s", error)
        return 2
    return 0


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def run_startup(args: argparse.Namespace) -> int:
    setup_logging(args.log_file, verbose=args.debug)
    support = SupportConfig(common=common_from_args(args), url=args.url, download_from=tuple(args.download_from))
    rotation = RotationConfig(handoff_bytes=args.startup_handoff_bytes, handoff_after=args.startup_handoff_after)
    try:
        asyncio.run(run_until_stopped(StartupNode(StartupConfig(support=support, rotation=rotation)).run))
    except JoinError as error:
        log.error("cannot join: %s", error)
        return 2
    return 0
