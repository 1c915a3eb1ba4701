"""The registry's pages for people: the stream list, a stream's page, a node's page, the watch page, the dashboard.

How this works. Each page is HTML rendered here from the same reads as the JSON API (registry/queries.py) by
registry/pages.py, which escapes every value; scripts in registry/static/ then keep it live from the JSON API
(/api/streams, /api/series, /api/nodes/<id>/series): the list's viewer counts, the dashboard's uPlot charts. The
watch page plays through the viewer's own engine, else the broadcaster's HLS (registry/watch.py, static/watch.js).

No page has an inline script, and each page's Content-Security-Policy lets it load scripts, styles and data from
the registry only; the watch page (and a stream's page, which embeds the player) may also connect to the viewer's
engine and the stream's HLS origin, and play from ``blob:`` (hls.js feeds the video through Media Source
Extensions). Static files are a fixed list read from the package (uPlot 1.6.32 and hls.js 1.7.4 pinned from npm,
with their licenses): no path from a request reaches the file system.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from aiohttp import web

from swarmcast.registry import pages, queries, validate
from swarmcast.registry.api import series_reader
from swarmcast.registry.state import RegistryState
from swarmcast.registry.watch import (
    EngineAddressError,
    engine_origin,
    engine_query,
    hls_origin,
    no_play_reason,
    origin_of,
)

UPLOT_VERSION = "1.6.32"
DEFAULT_REFRESH = 5.0  # seconds between a page's reads of the JSON API (the heartbeat interval: nothing is newer)
MIN_REFRESH, MAX_REFRESH = 0.5, 3600.0  # ?refresh= bounds
DEFAULT_CHART_SECONDS = 900.0  # the dashboard shows the last 15 minutes
MIN_CHART_SECONDS = 10.0  # ?seconds= bounds (the upper one is the registry's --retention)

# name -> (package, content type): the only files under /static/
STATIC_FILES = {
    "uPlot.iife.min.js": ("swarmcast.registry", "application/javascript"),
    "uPlot.min.css": ("swarmcast.registry", "text/css"),
    "uPlot-LICENSE": ("swarmcast.registry", "text/plain"),
    "site.css": ("swarmcast.registry", "text/css"),
    "common.js": ("swarmcast.registry", "application/javascript"),
    "list.js": ("swarmcast.registry", "application/javascript"),
    "watch.js": ("swarmcast.registry", "application/javascript"),
    "dashboard.js": ("swarmcast.registry", "application/javascript"),
    "hls.min.js": ("swarmcast.http", "application/javascript"),
    "hls.js-LICENSE": ("swarmcast.http", "text/plain"),
    "player.js": ("swarmcast.http", "application/javascript"),
}
STATIC_HEADERS = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip


def csp(connect: tuple[str, ...] = (), media: bool = False) -> str:
    """The Content-Security-Policy of a page; ``connect``: origins it may read from besides its own."""
    policy = f"{_CSP}; connect-src 'self'{''.join(' ' + o for o in connect)}"
    if media:
        policy += "; media-src 'self' blob:; worker-src blob:"
    return policy


def _headers(policy: str | None = None) -> dict[str, str]:
    return {"Content-Security-Policy": policy or csp(), "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}  # fmt: skip


def _html(text: str, *, status: int = 200, policy: str | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=_headers(policy))


def _bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 page (raised from inside a handler) saying what was wrong in one line."""
    return web.HTTPBadRequest(text=pages.error_page(400, message), content_type="text/html", headers=_headers())


def _refused(status: int, message: str) -> web.Response:
    return _html(pages.error_page(status, message), status=status)


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A number query parameter within [low, high]; a bad one is a 400 page naming it."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise _bad_request(f"{name}: {text[:40]!r} is not a number from {low:g} to {high:g}")
    return value


def _refresh(request: web.Request) -> float:
    return _number(request, "refresh", DEFAULT_REFRESH, MIN_REFRESH, MAX_REFRESH)


def _stream_key(request: web.Request) -> str:
    """The page's stream (content id or registry name); anything else (a NUL, a newline) is a 404 page before
    the database sees it."""
    key = validate.stream_key(request.match_info["key"])
    if key is None:
        raise web.HTTPNotFound(text=pages.error_page(404, "no such stream"), content_type="text/html",
                               headers=_headers())  # fmt: skip
    return key


class Pages:
    """The handlers, holding the registry's state."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state

    async def _read(self, fn: Callable[..., Any], *args: object) -> Any:
        # A read transaction: no write lock, so page views never hold up heartbeats (db.Database.read).
        return await self.state.db.read(lambda conn: fn(conn, *args))

    async def stream_list(self, request: web.Request) -> web.Response:
        streams = await self._read(queries.list_streams)
        return _html(pages.stream_list(streams, refresh=_refresh(request)))

    async def _watch_config(self, request: web.Request, stream: Mapping[str, Any]) -> tuple[dict[str, object], str]:
        """What static/watch.js needs, and the page's policy (connect-src: the engine and the HLS origin)."""
        try:
            engine = engine_origin(request.query.get("engine"))
        except EngineAddressError as error:
            raise _bad_request(str(error)) from None
        transport = await self._read(queries.get_transport, stream["content_id"])
        hls = hls_origin(stream.get("renditions"), transport)
        config: dict[str, object] = {
            "engine": engine, "query": engine_query(stream["content_id"], stream.get("nodes") or []),
            "hls": hls, "reason": no_play_reason(engine, bool(stream.get("live"))), "content_id": stream["content_id"],
        }  # fmt: skip
        connect = (engine, origin_of(hls)) if hls else (engine,)
        return config, csp(connect, media=True)

    async def stream_page(self, request: web.Request) -> web.Response:
        stream = await self._read(queries.get_stream, _stream_key(request))
        if stream is None:
            return _refused(404, "no such stream")
        config, policy = await self._watch_config(request, stream)
        text = pages.stream_page(stream, stream.get("nodes") or [], config, refresh=_refresh(request))
        return _html(text, policy=policy)

    async def watch_page(self, request: web.Request) -> web.Response:
        stream = await self._read(queries.get_stream, _stream_key(request))
        if stream is None:
            return _refused(404, "no such stream")
        config, policy = await self._watch_config(request, stream)
        return _html(pages.watch_page(stream, config), policy=policy)

    async def node_page(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        if not validate.is_node_id(node_id):
            return _refused(404, "no such node")
        node = await self._read(queries.get_node, node_id)
        if node is None:
            return _refused(404, "no such node")
        carried = set(node.get("content_ids") or ())
        streams = [s for s in await self._read(queries.list_streams) if s["content_id"] in carried]
        return _html(pages.node_page(node, streams, refresh=_refresh(request)))

    async def dashboard(self, request: web.Request) -> web.Response:
        refresh = _refresh(request)
        retention = max(MIN_CHART_SECONDS, self.state.settings.retention)
        seconds = _number(request, "seconds", min(DEFAULT_CHART_SECONDS, retention), MIN_CHART_SECONDS, retention)
        # Bounded and cached with the series reads the page goes on to make (api.series_reader).
        streams = await series_reader(self.state).get(("dashboard streams",), lambda: self._read(queries.list_streams))
        chosen = None
        if "stream" in request.query:
            key = request.query["stream"]
            chosen = next((s for s in streams if key in (s["content_id"], s["name"])), None)
            if chosen is None:
                return _refused(404, "no such stream")
        return _html(pages.dashboard_page(streams, chosen, refresh=refresh, seconds=seconds))


@cache
def static_file(name: str) -> bytes:
    package, _ = STATIC_FILES[name]
    return importlib.resources.files(package).joinpath("static", name).read_bytes()


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound
    return web.Response(body=static_file(name), content_type=STATIC_FILES[name][1], headers=STATIC_HEADERS)


def add_routes(app: web.Application, state: RegistryState) -> None:
    handlers = Pages(state)
    app.router.add_get("/", handlers.stream_list)
    app.router.add_get("/streams/{key}", handlers.stream_page)
    app.router.add_get("/watch/{key}", handlers.watch_page)
    app.router.add_get("/nodes/{node_id}", handlers.node_page)
    app.router.add_get("/dashboard", handlers.dashboard)
    app.router.add_get("/static/{name}", static)
