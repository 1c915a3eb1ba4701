"""Helpers for the registry's tests: an app on a test server over any database URL (the ``registry_db_url``
fixture of tests/conftest.py gives SQLite and PostgreSQL), real transport files, and request bodies."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from swarmcast.registry.app import build_app
from swarmcast.registry.db import Database
from swarmcast.registry.state import RegistrySettings, RegistryState
from swarmcast.transport import Descriptor

TOKEN = "registry-test-token"  # the admin (fleet) token: every route
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NODE_TOKEN = "registry-test-node-token"  # the nodes' token: /api/nodes* writes and POST /api/streams only
NODE_AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}


@contextlib.asynccontextmanager
async def registry_client(db_url: str, state_dir: Path, *, sweep: bool = False,
                          **settings: Any) -> AsyncIterator[tuple[TestClient[Any, Any], RegistryState]]:  # fmt: skip
    """The registry app on a loopback test server; the server and the database engine are closed at exit."""
    database = Database(db_url)
    database.upgrade()
    state = RegistryState(db=database, token=TOKEN, node_token=NODE_TOKEN,
                          settings=RegistrySettings(state_dir=state_dir, **settings))
    client = TestClient(TestServer(build_app(state, sweep=sweep)))
    await client.start_server()
    try:
        yield client, state
    finally:
        await client.close()
        database.dispose()


def transport_file(name: str = "news", title: str = "News") -> tuple[str, bytes]:
    """A real transport file (a fresh key each time, so a fresh content id): (content id, bytes)."""
    descriptor = Descriptor(name=name, title=title, piece_size=65536, bitrate=250_000,
                            public_key=secrets.token_bytes(32), quality="HD", categories=("informational",))
    return descriptor.infohash, descriptor.encode()


def node_body(role: str = "support", address: str | None = "127.0.0.1:7001", content_ids: list[str] | None = None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"role": role, "address": address, "http": "http://127.0.0.1:7001", "capacity_bps": 10_000_000,
            "version": "0.1.0", "content_ids": content_ids or [], "name": None, **extra}  # fmt: skip


def stream_body(content_id: str, data: bytes, name: str = "news", node_id: str | None = None,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"content_id": content_id, "name": name, "title": "News at ten", "categories": ["informational"],
            "quality": "HD", "bitrate": 2_000_000, "renditions": None,
            "transport": base64.b64encode(data).decode(), "node_id": node_id, **extra}  # fmt: skip
