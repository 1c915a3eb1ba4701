"""Pieces every node role composes: the cache, the swarm config, the web routes, the tracker announcer."""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.node.access import build_policy
from swarmcast.node.config import CacheConfig, NodeCommon
from swarmcast.node.host import PeerHost
from swarmcast.node.webaccess import WebAccess
from swarmcast.swarm.core import Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import Address
from swarmcast.swarm.rotation import RotationConfig
from swarmcast.swarm.store import PieceStore
from swarmcast.transport import Descriptor
from swarmcast.wire.messages import MAX_WINDOW_PIECES, HandshakeFlags


def new_peer_id() -> bytes:
    # Azureus-style prefix so trackers and logs can tell our clients apart.
    return b"-SC0100-" + secrets.token_bytes(12)


def make_store(cache: CacheConfig, content_id: bytes, port: int,
               window_pieces: int = MAX_WINDOW_PIECES) -> PieceStore:  # fmt: skip
    """The live cache; ``window_pieces`` behind the newest piece are kept at most (a viewer engine keeps fewer)."""
    directory: Path | None = None
    if cache.cache_type == "disk":
        base = cache.directory or Path("/tmp") / "swarmcast-cache"
        directory = base / f"{content_id.hex()}-{port}-{os.getpid()}"
    return PieceStore(max_bytes=cache.max_bytes, window_pieces=window_pieces, directory=directory)


def token_matches(request: web.Request, token: str | None) -> bool:
    """Whether the request's path carries ``token`` as ``/app/<token>/...``, compared on the raw path.

    The router matches decoded paths, so ``/app/%74oken/stat`` would match the token ``token``: an access token is
    a literal string, and only that literal string opens the door. The comparison takes constant time.
    """
    if token is None:
        return True
    parts = request.raw_path.split("?", 1)[0].split("/")
    return len(parts) > 2 and parts[1] == "app" and hmac.compare_digest(parts[2].encode(), token.encode())


def app_path(token: str | None, name: str) -> str:
    """The route of ``/app/<token>/<name>`` (``/app/<name>`` on a node without a token)."""
    return f"/app/{{token}}/{name}" if token is not None else f"/app/{name}"


def transport_file_routes(app: web.Application, transport_bytes: bytes, token: str | None) -> None:
    """``/app/<token>/get_transport_file?format=raw`` (without ``<token>/`` when the node has no token)."""

    async def get_transport_file(request: web.Request) -> web.Response:
        if not token_matches(request, token):
            return web.json_response({"result": None, "error": "invalid access token"}, status=403)
        if request.query.get("format", "raw") != "raw":
            return web.json_response(
                {"result": {"transport_file": transport_bytes.hex()}, "error": None}
            )
        return web.Response(body=transport_bytes, content_type="application/x-bittorrent")

    app.router.add_get(app_path(token, "get_transport_file"), get_transport_file)


def status_routes(app: web.Application, swarm: Swarm, token: str | None) -> None:
    """``/app/<token>/stat``: the node's swarm counters as JSON (for monitoring and benchmarks)."""

    async def stat(request: web.Request) -> web.Response:
        if not token_matches(request, token):
            return web.json_response({"result": None, "error": "invalid access token"}, status=403)
        return web.json_response({"result": swarm.stats_snapshot(time.monotonic()), "error": None})

    app.router.add_get(app_path(token, "stat"), stat)


def tracker_routes(app: web.Application, tracker: InternalTracker, token: str | None) -> None:
    """The internal tracker: ``/announce`` on a node without a token, ``/app/<token>/announce`` with one.

    A joiner derives the tracker from the transport file's URL (same prefix, ``announce`` for
    ``get_transport_file``), so whoever may fetch the transport file may announce, and nobody else.
    """
    if token is None:
        tracker.add_routes(app)
    else:
        tracker.add_routes(app, path=app_path(token, "announce"), authorize=lambda r: token_matches(r, token))


def node_host_and_swarm(
    common: NodeCommon, *, role: Role, flags: HandshakeFlags, peer_id: bytes, app: web.Application,
    descriptor: Descriptor, download_from: frozenset[Address] | None = None, trusted: Iterable[str] = (),
    rotation: RotationConfig | None = None,
) -> tuple[PeerHost, Swarm]:  # fmt: skip
    """The shared port (with the node's admission limits and access policy) and the broadcast's swarm, as every
    node role builds them. ``trusted``: more operator addresses a private node admits (a source's support nodes).
    Raises FilterError (node/ipfilter.py) when the ip filter or its database is unusable.

    A start node (``rotation``) keeps its slots for the newcomers that find it: it dials only the addresses it was
    told to use (the source, --download-from), never viewers from trackers or PEX."""
    access = common.access
    policy = build_policy(access, max_connections=common.admission.max_connections,
                          download_from=[h for h, _ in download_from or ()], trusted=trusted)  # fmt: skip
    admission = replace(common.admission, one_connection_per_peer=access.one_connection_per_ip)
    host = PeerHost(bind=common.bind, port=common.port, peer_id=peer_id, app=app, admission=admission,
                    flags=flags, access=policy)  # fmt: skip
    host.web_allowed = WebAccess(common.access).allows
    swarm = Swarm(
        content_id=descriptor.content_id,
        peer_id=peer_id,
        config=SwarmConfig(
            role=role,
            upload_slots=common.upload_slots,
            upload_limit=common.upload_limit,
            max_peers=common.max_peers,
            optimistic_slots=common.optimistic_slots,
            newcomer_slots=common.newcomer_slots,
            download_from=download_from,
            upload_to=frozenset(ip for ip, _ in access.upload_to) or None,
            rotation=rotation,
            target_peers=0 if rotation is not None else SwarmConfig.target_peers,
        ),
        store=make_store(common.cache, descriptor.content_id, common.port),
        descriptor=descriptor,
        now=time.monotonic(),
    )
    return host, swarm
