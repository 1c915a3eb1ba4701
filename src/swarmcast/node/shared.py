"""Pieces every node role composes: the cache, the swarm config, the web routes, the tracker announcer."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from aiohttp import web

from swarmcast.node.config import CacheConfig
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.store import PieceStore
from swarmcast.wire.messages import MAX_WINDOW_PIECES


def new_peer_id() -> bytes:
    # Azureus-style prefix so trackers and logs can tell our clients apart.
    return b"-SC0100-" + secrets.token_bytes(12)


def make_store(cache: CacheConfig, content_id: bytes, port: int) -> PieceStore:
    directory: Path | None = None
    if cache.cache_type == "disk":
        base = cache.directory or Path("/tmp") / "swarmcast-cache"
        directory = base / f"{content_id.hex()}-{port}-{os.getpid()}"
    return PieceStore(max_bytes=cache.max_bytes, window_pieces=MAX_WINDOW_PIECES, directory=directory)


def transport_file_routes(app: web.Application, transport_bytes: bytes, token: str | None) -> None:
    """``/app/<token>/get_transport_file?format=raw`` (without ``<token>/`` when the node has no token)."""

    async def get_transport_file(request: web.Request) -> web.Response:
        if token is not None and request.match_info.get("token") != token:
            return web.json_response({"result": None, "error": "invalid access token"}, status=403)
        if request.query.get("format", "raw") != "raw":
            return web.json_response(
                {"result": {"transport_file": transport_bytes.hex()}, "error": None}
            )
        return web.Response(body=transport_bytes, content_type="application/x-bittorrent")

    path = "/app/{token}/get_transport_file" if token is not None else "/app/get_transport_file"
    app.router.add_get(path, get_transport_file)


def status_routes(app: web.Application, swarm: Swarm, token: str | None) -> None:
    """``/app/<token>/stat``: the node's swarm counters as JSON (for monitoring and benchmarks)."""

    async def stat(request: web.Request) -> web.Response:
        if token is not None and request.match_info.get("token") != token:
            return web.json_response({"result": None, "error": "invalid access token"}, status=403)
        return web.json_response({"result": swarm.stats_snapshot(time.monotonic()), "error": None})

    app.router.add_get("/app/{token}/stat" if token is not None else "/app/stat", stat)
