"""Cross-origin reads of the engine's playback paths, for web pages that play through the viewer's own engine.

The registry's watch page (registry/watch.py) is served by the registry, not the engine, and reads the engine's
version, HLS playlist and segments with ``fetch``/XHR: the browser lets it only when the answers carry
``Access-Control-Allow-Origin``. The HLS answers carried it already (hls_out.PLAYLIST_HEADERS); this adds the version
the page probes the engine with and the playlist's error answers (a 400 or 504 the page shows). These paths alone get
``*`` (no credentials: the engine has no cookies or user sessions): what any page could already make the engine do
(join a broadcast, a GET with no preflight) it may now also read, a live stream that is public in the swarm anyway.
Everything else (``/ace/getstream``'s session URLs, ``/ace/stat``, ``/app/stat``) stays unreadable to other
origins, and the Host check against DNS rebinding (engine_api.json_errors) is unchanged.

Errors must not make the engine a port scanner for web pages: with ``url=`` the engine fetches any URL, and its
error text tells a closed port ("connect failed") from an open one ("answered HTTP 404") from a JSON service ("not a
transport file"). So a cross-origin request (one with an ``Origin`` header: browsers send it on every CORS read)
that names the broadcast by anything but its id (``url=``, ``data=``, ``magnet=``, ...) gets the one text
:data:`GENERIC_ERROR` (:func:`error_text`), and a playlist error carries the CORS header only when its text is that
or the request named a broadcast by ``id=``/``content_id=``/``infohash=`` (:func:`_add_headers`). Players and
scripts on the viewer's machine (no ``Origin``) and the engine's own /player page (same origin) keep the detail.
"""

from __future__ import annotations

from aiohttp import web

from swarmcast.http.engine_params import ID_KEYS, SELECTORS

CORS_PATHS = ("/webui/api/service", "/ace/manifest.m3u8")  # exact paths
CORS_PREFIXES = ("/ace/hls/",)  # and the playlist's segments
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}
ERROR_CHECKED_PATHS = ("/ace/manifest.m3u8",)  # whose error text may tell what the engine fetched
GENERIC_ERROR = "the engine cannot play this stream"
_GENERIC_KEY: web.RequestKey[bool] = web.RequestKey("cors_generic_error", bool)


def _by_id(request: web.BaseRequest) -> bool:
    """The request names its broadcast by id only (the engine fetches nothing a page chose)."""
    named = [key for key in request.query if key in SELECTORS]
    return bool(named) and all(key in ID_KEYS for key in named)


def error_text(request: web.Request, message: str) -> str:
    """The error text a playback path answers ``request`` with: ``message``, or :data:`GENERIC_ERROR` for a
    cross-origin request that does not name its broadcast by id (see the module's docstring)."""
    if "Origin" not in request.headers or _by_id(request):
        return message
    request[_GENERIC_KEY] = True
    return GENERIC_ERROR


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    path = request.path
    if not (path in CORS_PATHS or path.startswith(CORS_PREFIXES)):
        return
    safe = _by_id(request) or request.get(_GENERIC_KEY, False)
    if response.status >= 400 and path in ERROR_CHECKED_PATHS and not safe:
        return  # a detailed error about a URL (or data) the page chose: not for other origins to read
    response.headers.update(CORS_HEADERS)


def allow_cross_origin_playback(app: web.Application) -> None:
    """Add the CORS headers to the playback paths' answers (errors too when safe, so a page can tell why)."""
    app.on_response_prepare.append(_add_headers)
