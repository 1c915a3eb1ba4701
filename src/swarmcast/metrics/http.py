"""``/metrics`` on a node's port and on the engine's playback API (aiohttp handlers; the collectors do the work).

Access is the web interface's. On a node, the port's access rule (local machine, ``--monitor-node-ip``, or anyone
with ``--service-remote-access``: node/webaccess.py) is applied to every request by the demux and the web access
middleware before it gets here, and with ``--service-access-token TOKEN`` the metrics need the token: either in
the path, ``/app/TOKEN/metrics`` (as every other /app path), or on ``/metrics`` as ``Authorization: Bearer TOKEN``
(what Prometheus' ``authorization`` setting sends, so the token stays out of URLs and logs). On the engine,
``/metrics`` is one more path of the playback API, under its rules (its bind address, the Host check).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from swarmcast.metrics.collectors import EngineCollector, NodeCollector
from swarmcast.metrics.exposition import build_info_collector, exposition, new_registry
from swarmcast.node.shared import app_path
from swarmcast.tokens import bearer, matches

if TYPE_CHECKING:
    from prometheus_client.registry import Collector, CollectorRegistry

    from swarmcast.node.engine import Engine
    from swarmcast.node.monitor import NodeState

METRICS_PATH = "/metrics"
_NO_STORE = {"Cache-Control": "no-store"}


def _handler(collectors: Callable[[], list[Collector]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    registry: list[CollectorRegistry] = []  # made at the first scrape: prometheus-client loads only then

    async def metrics(request: web.Request) -> web.Response:
        if not registry:
            registry.append(new_registry(collectors()))
        body, content_type = exposition(registry[0], request.headers.get("Accept"))
        return web.Response(body=body, headers={**_NO_STORE, "Content-Type": content_type})

    return metrics


def bearer_matches(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared by swarmcast.tokens (constant time, capped, safe on bytes that
    are not UTF-8)."""
    return matches(bearer(request.headers), token)


def node_metrics_routes(app: web.Application, state: NodeState, token: str | None) -> None:
    """``/metrics`` and ``/app/[TOKEN/]metrics`` on a node's port (see the module docstring for access)."""
    metrics = _handler(lambda: [build_info_collector(state.kind), NodeCollector(state)])

    async def root_metrics(request: web.Request) -> web.StreamResponse:
        if token is not None and not bearer_matches(request, token):
            return web.json_response({"result": None, "error": "invalid access token"}, status=403,
                                     headers=_NO_STORE)  # fmt: skip
        return await metrics(request)

    app.router.add_get(METRICS_PATH, root_metrics)
    app.router.add_get(app_path(token, "metrics"), metrics)


def engine_metrics_routes(app: web.Application, engine: Engine) -> None:
    """``/metrics`` on the engine's playback API."""

    def collectors() -> list[Collector]:
        return [build_info_collector("engine"), EngineCollector(engine)]

    app.router.add_get(METRICS_PATH, _handler(collectors))
