"""The node web interface's management face: /app/[TOKEN/]monitor, /app/[TOKEN/]monitoring and /app/[TOKEN/]update
(and /metrics: swarmcast.metrics.http).

Every node role (source, support, start node) calls ``node_api_routes`` with its ``NodeState`` (node/monitor.py).
Who may connect at all is decided before any byte reaches aiohttp (node/webaccess.py, in node/demux.py); here,
with ``--service-access-token``, every ``/app`` path needs the token (403 otherwise, whatever the path, so a wrong
token tells nothing about which paths exist). /update's parameters are all checked before anything changes; a bad
one is a 400 whose ``error`` starts with the parameter's name.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from swarmcast.metrics.http import node_metrics_routes
from swarmcast.node.monitor import Monitor, NodeState, UpdateRequest, apply_update
from swarmcast.node.shared import app_path, token_matches
from swarmcast.node.webaccess import WebAccess, is_tracker_path
from swarmcast.swarm.peer import Address

MAX_PEERS_LIMIT = 100_000  # /update's max_peers is 1..this
MAX_UPLOAD_SLOTS_LIMIT = 10_000  # /update's max_upload_slots is 0..this (0 = upload nothing)
MAX_UPLOAD_LIMIT_KBPS = 10_000_000  # /update's upload_limit is 0..this KB/s (10 GB/s; 0 = no limit)
MAX_UPDATE_ADDRESSES = 64  # addresses one download_from or upload_to may list
UPDATE_PARAMETERS = ("max_peers", "max_upload_slots", "upload_limit", "download_from", "upload_to", "reload_filter")
_LISTS = ("download_from", "upload_to")
_NO_STORE = {"Cache-Control": "no-store"}


class UpdateError(ValueError):
    """A bad /update parameter; the message starts with its name."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


def _whole(parameter: str, text: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise UpdateError(parameter, f"{text[:40]!r} is not a whole number in {low}..{high}")
    value = int(text[:12]) if len(text) <= 12 else high + 1
    if not low <= value <= high:
        raise UpdateError(parameter, f"{text[:40]} is not in {low}..{high}")
    return value


def _address(parameter: str, text: str, *, min_port: int) -> Address:
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise UpdateError(parameter, f"{text[:60]!r} is not IP:PORT")
    try:
        ip = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        raise UpdateError(parameter, f"{text[:60]!r} is not IP:PORT (an IP address, not a host name)") from None
    return ip, _whole(parameter, port_text, min_port, 65535)


def _addresses(parameter: str, texts: list[str]) -> tuple[Address, ...]:
    items = [item for text in texts for item in text.split(",") if item.strip()]
    if len(items) > MAX_UPDATE_ADDRESSES:
        raise UpdateError(parameter, f"{len(items)} addresses, at most {MAX_UPDATE_ADDRESSES}")
    # download_from names nodes to dial (port 0 names none); upload_to filters by IP only (the port is ignored).
    min_port = 1 if parameter == "download_from" else 0
    found: dict[Address, None] = {}
    for item in items:
        found[_address(parameter, item, min_port=min_port)] = None
    return tuple(found)


def parse_update(query: Iterable[tuple[str, str]]) -> UpdateRequest:
    """/update's query as an UpdateRequest; UpdateError names the first bad parameter.

    download_from and upload_to are comma-separated lists (and may repeat); given empty they clear the setting."""
    values: dict[str, list[str]] = {}
    for name, value in query:
        if name not in UPDATE_PARAMETERS:
            raise UpdateError(name[:40], f"unknown parameter (known: {', '.join(UPDATE_PARAMETERS)})")
        if name in values and name not in _LISTS:
            raise UpdateError(name, "given more than once")
        values.setdefault(name, []).append(value)

    def one(name: str) -> str | None:
        given = values.get(name)
        return given[0] if given else None

    max_peers, slots, reload_filter = one("max_peers"), one("max_upload_slots"), one("reload_filter")
    limit = one("upload_limit")
    if reload_filter not in (None, "0", "1"):
        raise UpdateError("reload_filter", f"{reload_filter[:40]!r} is not 0 or 1")
    return UpdateRequest(
        max_peers=None if max_peers is None else _whole("max_peers", max_peers, 1, MAX_PEERS_LIMIT),
        max_upload_slots=None if slots is None else _whole("max_upload_slots", slots, 0, MAX_UPLOAD_SLOTS_LIMIT),
        # KB/s (1 KB = 1000 bytes) as --upload-limit takes it.
        upload_limit=None if limit is None else 1000 * _whole("upload_limit", limit, 0, MAX_UPLOAD_LIMIT_KBPS),
        download_from=_addresses("download_from", values["download_from"]) if "download_from" in values else None,
        upload_to=_addresses("upload_to", values["upload_to"]) if "upload_to" in values else None,
        reload_filter=reload_filter == "1",
    )


def cross_site(request: web.Request) -> bool:
    """A browser's request made by another site's page (an <img> or fetch() aimed at the node, which trusts the
    local machine): browsers say so in Sec-Fetch-Site; scripts (curl, requests) send no such header."""
    return request.headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"result": None, "error": message}, status=status, headers=_NO_STORE)


def token_middleware(token: str) -> Middleware:
    """Every /app path needs the token (compared on the raw path, in constant time: node/shared.py)."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if (path == "/app" or path.startswith("/app/")) and not token_matches(request, token):
            return _error(403, "invalid access token")
        return await handler(request)

    return require_token


def web_access_middleware(rule: WebAccess) -> Middleware:
    """The web interface's access rule, request by request: the port's demux (node/demux.py) checks a connection's
    first request, and this checks the ones a kept-alive connection sends after it (one let in for the tracker must
    not go on to /app/monitor). A refused request is closed with no answer, as at the demux."""

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and not is_tracker_path(request.raw_path):
            local = transport.get_extra_info("sockname")
            if not rule.allows(request.remote or "", str(local[0]) if local else ""):
                transport.abort()
                raise web.HTTPForbidden()  # never sent: the connection is gone
        return await handler(request)

    return check_access


def node_api_routes(app: web.Application, state: NodeState, token: str | None) -> Monitor:
    """Add /app/[token/]monitor, /monitoring and /update to ``app`` (before the node starts serving)."""
    monitor = Monitor(state)
    app.middlewares.append(web_access_middleware(WebAccess(state.common.access)))
    if token is not None:
        app.middlewares.append(token_middleware(token))

    async def monitor_page(request: web.Request) -> web.Response:
        return web.json_response(monitor.figures(time.monotonic(), time.time()), headers=_NO_STORE)

    async def update(request: web.Request) -> web.Response:
        if cross_site(request):
            return _error(403, "a cross-site request may not change settings")
        try:
            parsed = parse_update(request.query.items())
            answer = apply_update(state, parsed, time.monotonic())
        except ValueError as error:  # UpdateError, or a hook refusing the value (its message names the parameter)
            return _error(400, str(error))
        finally:
            monitor.refresh()
        return web.json_response(answer, headers=_NO_STORE)

    app.router.add_get(app_path(token, "monitor"), monitor_page)
    app.router.add_get(app_path(token, "monitoring"), monitor_page)
    app.router.add_get(app_path(token, "update"), update)
    node_metrics_routes(app, state, token)  # /metrics (metrics/http.py: the same access rules)
    return monitor
