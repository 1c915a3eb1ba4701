"""The registry's JSON API (docs/registry.md, "API"): nodes register, beat and leave; sources register their
broadcasts; anyone reads streams, nodes, peers and series.

How this works. Handlers are thin: read a bounded body, let validate.py turn it into a checked record (or a
400 naming the field), run one query function in the database's worker thread, answer JSON. Writes need the
node token (or the admin token) as a Bearer token (auth.py); reads of public data do not. ``json_errors`` puts
every failure under /api/ in the ``{"error": "<one line>"}`` shape: 4xx for the client's mistakes, 503 when the
database cannot be reached, 500 (logged, no traceback in the answer) for our bugs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from swarmcast.registry import queries, series, validate
from swarmcast.registry.auth import require_node_token
from swarmcast.registry.db import first_line
from swarmcast.registry.metrics import METRICS_KEY
from swarmcast.registry.state import RegistryState

log = logging.getLogger("swarmcast.registry")

MAX_BODY = 64 * 1024  # bytes of any JSON body but a stream's
MAX_STREAM_BODY = 1 << 20  # bytes of POST /api/streams (its base64 transport file is most of it)
MIN_HEARTBEAT_GAP = 1.0  # seconds: a node's heartbeats closer than this are refused (429) before the database
DEFAULT_SERIES_SECONDS = 600.0
UNAVAILABLE_LOG_INTERVAL = 10.0  # seconds: at most one "database unavailable" line per this (with a count)
SERIES_READER = "series_reader"  # state.extras key of the shared series.SeriesReader (api.py and web.py)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Failures under /api/ answered as ``{"error": ...}``; also counts every request for /metrics."""
    api = request.path.startswith("/api/")
    try:
        response = await handler(request)
    except validate.RequestError as bad:
        response = error(str(bad), 400)
    except web.HTTPException as http_error:
        if not api or http_error.status < 400 or http_error.content_type == "application/json":
            _count(request, http_error.status)
            raise
        message = {404: "no such path", 405: f"method {request.method} not allowed",
                   413: "request body too large"}.get(http_error.status, http_error.reason)  # fmt: skip
        allow = {"Allow": http_error.headers["Allow"]} if "Allow" in http_error.headers else None
        response = error(message, http_error.status, allow)
    except sa.exc.IntegrityError:
        # Two writes of one new row at once (PostgreSQL's READ COMMITTED lets both look first): the loser.
        response = error("a concurrent write of the same thing won: try again", 409)
    except (sa.exc.OperationalError, sa.exc.TimeoutError) as down:
        unavailable_log.warning(time.monotonic(), "database unavailable answering %s %s: %s", request.method,
                                request.raw_path[:200], first_line(down)[:300])
        response = error("the registry's database is unavailable, try again later", 503, {"Retry-After": "5"})
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        # raw_path is still percent-encoded: a %0A or %00 in it cannot forge or cut a log line.
        log.exception("unexpected error answering %s %s", request.method, request.raw_path[:200])
        response = error("internal error (logged by the registry)", 500)
    _count(request, response.status)
    return response


class ThrottledLog:
    """One log line per ``interval`` seconds at most; the next one says how many were held back. A database
    outage under load would otherwise write one line per request."""

    def __init__(self, interval: float = UNAVAILABLE_LOG_INTERVAL) -> None:
        self.interval = interval
        self._next = float("-inf")
        self.held = 0

    def warning(self, now: float, message: str, *args: object) -> bool:
        if now < self._next:
            self.held += 1
            return False
        if self.held:
            message += " (and %d more such answer(s) since the last line)"
            args = (*args, self.held)
        log.warning(message, *args)
        self.held = 0
        self._next = now + self.interval
        return True


unavailable_log = ThrottledLog()


def _count(request: web.Request, status: int) -> None:
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return
    route = request.match_info.route.resource
    metrics.count_request(request.method if request.method in _METHODS else "other",
                          route.canonical if route is not None else "unmatched", status)  # fmt: skip


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, limit: int = MAX_BODY) -> object:
    """The request's JSON body, read at most ``limit`` bytes (413 past it, whatever Content-Length says)."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    data = bytearray()
    while chunk := await request.content.read(65536):
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise validate.RequestError("the body nests too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise validate.RequestError("the body is not JSON") from None


class HeartbeatGate:
    """Per node, the last heartbeat time: one closer than ``MIN_HEARTBEAT_GAP`` is refused without touching the
    database. Bounded: the oldest entries go first past ``limit``."""

    def __init__(self, limit: int = 2 * queries.MAX_LIVE_NODES) -> None:
        self._last: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def allow(self, node_id: str, now: float) -> bool:
        last = self._last.get(node_id)
        if last is not None and now - last < MIN_HEARTBEAT_GAP:
            return False
        self._last[node_id] = now
        self._last.move_to_end(node_id)
        while len(self._last) > self._limit:
            self._last.popitem(last=False)
        return True


def _node_id(request: web.Request) -> str:
    node_id = request.match_info["node_id"]
    if not validate.is_node_id(node_id):
        raise web.HTTPNotFound
    return node_id


def _stream_key(request: web.Request) -> str:
    key = validate.stream_key(request.match_info["stream"])
    if key is None:
        raise web.HTTPNotFound
    return key


def series_reader(state: RegistryState) -> series.SeriesReader:
    """The registry's one SeriesReader (the bound on expensive public reads), made on first use."""
    found = state.extras.get(SERIES_READER)
    if not isinstance(found, series.SeriesReader):
        found = state.extras[SERIES_READER] = series.SeriesReader()
    return found


def add_routes(app: web.Application, state: RegistryState) -> None:
    settings = state.settings
    db = state.db
    gate = HeartbeatGate()
    sample_interval = settings.heartbeat_interval / 2  # two samples per beat interval at most, whatever comes
    reader = series_reader(state)

    def metrics_of(request: web.Request) -> Any:
        return request.app.get(METRICS_KEY)

    async def register_node(request: web.Request) -> web.Response:
        require_node_token(request, state.node_token, state.token)
        info = validate.node_info(await read_json(request), request.remote)
        try:
            node_id = await db.run(lambda c: queries.register_node(c, info, time.time()))
        except queries.RegistryFull as full:
            return error(str(full), 429)
        if (metrics := metrics_of(request)) is not None:
            metrics.registrations.labels(role=info.role).inc()
        log.info("node %s registered: %s %s", node_id, info.role, info.address or "(not listening)")
        return web.json_response({"node_id": node_id, "heartbeat_interval": settings.heartbeat_interval,
                                  "timeout": settings.heartbeat_timeout}, status=201)  # fmt: skip

    async def heartbeat(request: web.Request) -> web.Response:
        require_node_token(request, state.node_token, state.token)
        node_id = _node_id(request)
        beat = validate.heartbeat(await read_json(request))
        if not gate.allow(node_id, time.monotonic()):
            return error(f"heartbeats come at most once every {MIN_HEARTBEAT_GAP:g} s", 429, {"Retry-After": "1"})
        known = await db.run(lambda c: queries.heartbeat(c, node_id, beat, time.time(), sample_interval))
        if not known:
            return error("no such node: register again (POST /api/nodes)", 404)
        if (metrics := metrics_of(request)) is not None:
            metrics.heartbeats.inc()
        return web.json_response({})

    async def deregister(request: web.Request) -> web.Response:
        require_node_token(request, state.node_token, state.token)
        node_id = _node_id(request)
        if not await db.run(lambda c: queries.deregister(c, node_id, time.time())):
            return error("no such node", 404)
        log.info("node %s left", node_id)
        return web.Response(status=204)

    async def list_nodes(request: web.Request) -> web.Response:
        role, node_state = validate.node_filter(request.query.get("role"), request.query.get("state"))
        return web.json_response({"nodes": await db.read(lambda c: queries.list_nodes(c, role=role, state=node_state))})

    async def get_node(request: web.Request) -> web.Response:
        node_id = _node_id(request)
        node = await db.read(lambda c: queries.get_node(c, node_id))
        return error("no such node", 404) if node is None else web.json_response(node)

    async def node_series(request: web.Request) -> web.Response:
        node_id = _node_id(request)
        seconds = validate.seconds(request.query.get("seconds"), DEFAULT_SERIES_SECONDS, settings.retention)

        def read(conn: sa.Connection) -> dict[str, Any] | None:
            if queries.get_node(conn, node_id) is None:
                return None
            return series.node_series(conn, node_id, time.time(), seconds, settings.heartbeat_interval)

        found = await reader.get(("node", node_id, seconds), lambda: db.read(read))
        return error("no such node", 404) if found is None else web.json_response(found)

    async def register_stream(request: web.Request) -> web.Response:
        require_node_token(request, state.node_token, state.token)
        info = validate.stream_info(await read_json(request, MAX_STREAM_BODY))
        try:
            created = await db.run(lambda c: queries.upsert_stream(c, info, time.time()))
        except queries.StreamConflict as conflict:
            return error(str(conflict), 409)
        except queries.UnknownNode as unknown:
            return error(str(unknown), 400)
        except queries.RegistryFull as full:
            return error(str(full), 429)
        log.info("stream %s %s as %r", info.content_id, "registered" if created else "updated", info.name)
        return web.json_response({"content_id": info.content_id, "name": info.name, "created": created}, status=201)

    async def list_streams(_request: web.Request) -> web.Response:
        return web.json_response({"streams": await db.read(queries.list_streams)})

    async def get_stream(request: web.Request) -> web.Response:
        key = _stream_key(request)
        stream = await db.read(lambda c: queries.get_stream(c, key))
        return error("no such stream", 404) if stream is None else web.json_response(stream)

    async def transport(request: web.Request) -> web.Response:
        key = _stream_key(request)
        data = await db.read(lambda c: queries.get_transport(c, key))
        if data is None:
            return error("no such stream", 404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def peers(request: web.Request) -> web.Response:
        key = _stream_key(request)
        found = await db.read(lambda c: queries.stream_peers(c, key))
        return error("no such stream", 404) if found is None else web.json_response({"peers": found})

    async def network_series(request: web.Request) -> web.Response:
        seconds = validate.seconds(request.query.get("seconds"), DEFAULT_SERIES_SECONDS, settings.retention)
        key = request.query.get("content_id")
        stream = validate.stream_key(key) if key is not None else None
        if key is not None and stream is None:
            raise validate.RequestError("content_id: not a content id or stream name")

        def read(conn: sa.Connection) -> dict[str, Any] | None:
            content_id = None if stream is None else queries.find_stream(conn, stream)
            if stream is not None and content_id is None:
                return None
            return series.stream_series(conn, content_id, time.time(), seconds, settings.heartbeat_interval)

        found = await reader.get(("stream", stream, seconds), lambda: db.read(read))
        return error("no such stream", 404) if found is None else web.json_response(found)

    app.router.add_post("/api/nodes", register_node)
    app.router.add_get("/api/nodes", list_nodes)
    app.router.add_get("/api/nodes/{node_id}", get_node)
    app.router.add_delete("/api/nodes/{node_id}", deregister)
    app.router.add_post("/api/nodes/{node_id}/heartbeat", heartbeat)
    app.router.add_get("/api/nodes/{node_id}/series", node_series)
    app.router.add_post("/api/streams", register_stream)
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream}", get_stream)
    app.router.add_get("/api/streams/{stream}/transport", transport)
    app.router.add_get("/api/streams/{stream}/peers", peers)
    app.router.add_get("/api/series", network_series)
