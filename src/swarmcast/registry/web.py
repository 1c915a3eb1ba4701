"""Routes of the registry added by part W (regweb); this placeholder only holds the name until that part lands."""

from __future__ import annotations

from aiohttp import web

from swarmcast.registry.state import RegistryState


def add_routes(app: web.Application, state: RegistryState) -> None:
    del app, state
