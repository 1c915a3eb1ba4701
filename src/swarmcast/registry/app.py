"""The registry's aiohttp application: each part adds its own routes (api.py: JSON for nodes and streams;
controller.py: the fleet's controller endpoints; web.py: HTML pages and the dashboard; metrics.py: /metrics),
and the sweeper (sweeper.py) runs for as long as the app does."""

from __future__ import annotations

from aiohttp import web

from swarmcast.registry import api, controller, metrics, sweeper
from swarmcast.registry import web as web_pages
from swarmcast.registry.state import STATE_KEY, RegistryState

__all__ = ["STATE_KEY", "build_app"]


def build_app(state: RegistryState, *, sweep: bool = True) -> web.Application:
    """``sweep=False`` leaves the sweeper out (tests that drive queries.mark_gone themselves)."""
    # client_max_size bounds request.read()/json() of any route; api.py reads its bodies with its own limits.
    app = web.Application(client_max_size=api.MAX_STREAM_BODY, middlewares=[api.json_errors])
    app[STATE_KEY] = state
    metrics.add_routes(app)
    api.add_routes(app, state)
    controller.add_routes(app, state)
    web_pages.add_routes(app, state)
    if sweep:
        app.cleanup_ctx.append(sweeper.sweeper_ctx)
    return app
