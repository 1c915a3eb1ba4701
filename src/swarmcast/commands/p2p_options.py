"""``swarmcast broadcaster``'s P2P flags (``--p2p`` and its companions), parsed into a P2PConfig.

Kept apart from commands/broadcaster.py (the broadcaster's own flags): that parser calls
:func:`add_p2p_arguments` once and, with ``--p2p``, :func:`p2p_config_from_args`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from swarmcast.broadcaster.p2p import (
    CHANNEL_PATH,
    DEFAULT_MAX_NODES,
    DEFAULT_PORT_BASE,
    P2PBroadcaster,
    P2PConfig,
    channel_handler,
)
from swarmcast.broadcaster.streams import StreamRegistry
from swarmcast.commands.options import bounded_int, ip_literal, port, tracker_url
from swarmcast.commands.preflight import UsageError, check_directory
from swarmcast.commands.registry_flags import endpoint_from_args
from swarmcast.registry.client import TOKEN_ENV

MAX_NODES_LIMIT = 1000


def add_p2p_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("P2P: every rendition a signed P2P broadcast (docs/hls.md, P2P renditions)")
    group.add_argument("--p2p", action="store_true",
                       help="also run a source node (signed P2P broadcast) for every rendition of every published "
                            "stream, and write the channel file <publish-dir>/<id>.acechannel (default: off)")
    group.add_argument("--p2p-port-base", type=port, default=DEFAULT_PORT_BASE, metavar="PORT",
                       help="the rendition nodes listen on ports from PORT to PORT + --p2p-max-nodes - 1 "
                            "(default %(default)s)")
    group.add_argument("--p2p-max-nodes", type=bounded_int(1, MAX_NODES_LIMIT), default=DEFAULT_MAX_NODES,
                       metavar="N", help="rendition nodes in all, over every stream; renditions past it are "
                       f"served over HLS only (1..{MAX_NODES_LIMIT}, default %(default)s)")  # fmt: skip
    group.add_argument("--p2p-bind", type=ip_literal, default="127.0.0.1", metavar="IP",
                       help="address the rendition nodes listen on (default %(default)s; 0.0.0.0 for peers on "
                            "other hosts)")
    group.add_argument("--p2p-public-host", metavar="HOST",
                       help="host engines reach the rendition nodes at, written into the channel file (default: "
                            "--p2p-bind, or none when that is 0.0.0.0/::: engines then find the nodes through "
                            "--tracker)")
    group.add_argument("--tracker", type=tracker_url, action="append", default=[], metavar="URL",
                       help="a tracker every rendition node announces to and writes into its transport file "
                            "(repeatable; default: none, the nodes' internal trackers only)")
    group.add_argument("--publish-dir", type=Path, default=Path(), metavar="DIR",
                       help="where <id>-<rendition>.acelive and <id>.acechannel are written "
                            "(default: the current directory)")
    group.add_argument("--metadata-dir", type=Path, metavar="DIR",
                       help="where each rendition's key and numbering live, as <id>/<rendition>/<id>-<rendition>"
                            ".sauth and .restart (default: --publish-dir)")
    group.add_argument("--p2p-service-access-token", metavar="TOKEN",
                       help="the rendition nodes' --service-access-token (their /app/ operator pages) "
                            "(default: none)")


def p2p_config_from_args(args: argparse.Namespace, ts_base_url: str) -> P2PConfig:
    """The P2P config (``ts_base_url``: the broadcaster's own HTTP origin); UsageError for a flag that cannot be
    used: a port range past 65535, a directory that cannot be written."""
    last = args.p2p_port_base + args.p2p_max_nodes - 1
    if last > 65535:
        raise UsageError("--p2p-port-base", args.p2p_port_base,
                         f"with --p2p-max-nodes {args.p2p_max_nodes} the ports run to {last}, past 65535")
    check_directory("--publish-dir", args.publish_dir)
    metadata_dir = args.metadata_dir or args.publish_dir
    check_directory("--metadata-dir", metadata_dir)
    extra: tuple[str, ...] = ()
    if args.p2p_service_access_token:
        extra = ("--service-access-token", args.p2p_service_access_token)
    extra_env: tuple[tuple[str, str], ...] = ()
    endpoint = endpoint_from_args(args)
    if endpoint is not None:  # every rendition node registers itself and its broadcast; the token by environment
        extra += ("--registry", endpoint.url)
        if args.registry_host:
            extra += ("--registry-host", args.registry_host)
        if endpoint.token:
            extra_env = ((TOKEN_ENV, endpoint.token),)
    return P2PConfig(
        ts_base_url=ts_base_url, publish_dir=args.publish_dir, metadata_dir=metadata_dir,
        trackers=tuple(dict.fromkeys(args.tracker)), bind=args.p2p_bind, public_host=args.p2p_public_host,
        port_base=args.p2p_port_base, max_nodes=args.p2p_max_nodes, extra_args=extra, extra_env=extra_env,
    )  # fmt: skip


def ts_base_url(http_host: str, http_port: int) -> str:
    """The origin as the rendition nodes (on this host) reach it: a wildcard listen address through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http_host, http_host)
    return f"http://{f'[{host}]' if ':' in host else host}:{http_port}"


def attach_p2p(config: P2PConfig, registry: StreamRegistry, app: web.Application,
               p2p: P2PBroadcaster | None = None) -> Callable[[], Awaitable[None]]:  # fmt: skip
    """Plug the rendition nodes into the registry's hooks and serve the channel files on the origin's ``app``
    (before it is frozen); returns the cleanup that stops every node."""
    p2p = p2p or P2PBroadcaster(config)
    registry.on_stream_started.append(p2p.on_stream_started)
    registry.on_stream_ended.append(p2p.on_stream_ended)
    app.router.add_get(CHANNEL_PATH, channel_handler(p2p))
    return p2p.close
