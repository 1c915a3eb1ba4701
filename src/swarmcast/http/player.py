"""A live player page built on hls.js, for any server that has an HLS playlist to show.

The page is static HTML: a ``<video>`` whose ``data-manifest`` names the playlist, the pinned hls.js shipped with
the package (``static/hls.min.js``, hls.js 1.7.4 from npm, Apache-2.0: ``static/hls.js-LICENSE``; never fetched at
run time) and ``static/player.js``, which plays live, shows the delay behind the live edge (hls.js ``latency``),
recovers from a short break (network errors: retried, then ``startLoad``/``loadSource``; media errors:
``recoverMediaError``) and records what happened in ``window.swarmcastPlayer`` (the browser test reads it).

Mount it with :func:`player_handler` (a handler for a route: the engine's ``/player``, the broadcaster's
``/stream/<id>/player``) and :func:`add_static_routes` (``/static/...``, which the page loads its scripts from).
No inline script: the page's Content-Security-Policy allows scripts from the server itself only.
"""

from __future__ import annotations

import html
import importlib.resources
from collections.abc import Awaitable, Callable
from functools import cache

from aiohttp import web

STATIC_PREFIX = "/static/"
HLS_JS_VERSION = "1.7.4"
# name -> content type; the only files served under /static/ (no directory listing, no paths from the request)
STATIC_FILES = {
    "hls.min.js": "application/javascript",
    "player.js": "application/javascript",
    "hls.js-LICENSE": "text/plain",
}
STATIC_HEADERS = {"Cache-Control": "max-age=3600"}
# hls.js feeds the <video> through Media Source Extensions (blob: URLs) and runs its demuxer in a blob: worker.
PAGE_CSP = ("default-src 'none'; script-src 'self'; worker-src blob:; media-src 'self' blob:; connect-src 'self'; "
            "style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'self'")  # fmt: skip
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }}
video {{ display: block; width: 100%; max-height: 85vh; background: #000; }}
#bar {{ display: flex; gap: 1em; align-items: center; padding: 0.5em 1em; }}
button {{ font: inherit; }}
</style>
</head>
<body>
<video id="video" data-manifest="{manifest}" controls autoplay muted playsinline></video>
<div id="bar"><button id="unmute" type="button">sound on/off</button><span id="status">starting…</span>
<span>{title}</span></div>
<script src="{static}hls.min.js"></script>
<script src="{static}player.js"></script>
</body>
</html>
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def player_page(manifest_url: str, *, title: str = "swarmcast live", static_prefix: str = STATIC_PREFIX) -> str:
    """The page's HTML for the playlist at ``manifest_url`` (any URL the browser can fetch; same origin with the
    page's Content-Security-Policy)."""
    return _PAGE.format(manifest=html.escape(manifest_url, quote=True), title=html.escape(title),
                        static=html.escape(static_prefix, quote=True))  # fmt: skip


def player_handler(manifest_url: Callable[[web.Request], str | None], *,
                   title: Callable[[web.Request], str] | None = None) -> Handler:  # fmt: skip
    """A handler answering the player page; ``manifest_url(request)`` is the playlist's URL, or None for a 404
    (an unknown stream). It may raise an ``aiohttp.web.HTTPException`` for other answers (a 400)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        url = manifest_url(request)
        if url is None:
            raise web.HTTPNotFound
        page = player_page(url, title=title(request) if title is not None else "swarmcast live")
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    return handler


@cache
def static_file(name: str) -> bytes:
    """One of STATIC_FILES, read from the package once."""
    return importlib.resources.files("swarmcast.http").joinpath("static", name).read_bytes()


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound
    return web.Response(body=static_file(name), content_type=content_type, headers=STATIC_HEADERS)


def add_static_routes(app: web.Application) -> None:
    """``GET /static/<name>`` for the page's scripts and hls.js's license."""
    app.router.add_get(STATIC_PREFIX + "{name}", static)
