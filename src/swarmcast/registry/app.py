"""The registry's aiohttp application: each part adds its own routes (api.py: JSON for nodes and streams;
controller.py: the fleet's controller endpoints; web.py: HTML pages and the dashboard)."""

from __future__ import annotations

from aiohttp import web

from swarmcast.registry import api, controller
from swarmcast.registry import web as web_pages
from swarmcast.registry.state import RegistryState

STATE_KEY = web.AppKey("registry_state", RegistryState)


def build_app(state: RegistryState) -> web.Application:
    app = web.Application(client_max_size=1 << 20)  # transport files are the largest bodies (1 MiB)
    app[STATE_KEY] = state
    api.add_routes(app, state)
    controller.add_routes(app, state)
    web_pages.add_routes(app, state)
    return app
