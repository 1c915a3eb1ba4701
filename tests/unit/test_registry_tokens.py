"""The registry's two tokens (registry/auth.py, swarmcast/tokens.py): the node token registers, beats, leaves and
registers streams and nothing else; the controller and admin routes (lists with ingest URLs, broadcast keys) take
the admin token only; a token of odd bytes is a plain no, never a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from swarmcast import tokens
from swarmcast.registry.db import sqlite_url
from swarmcast.registry.state import RegistryState
from tests.registry_helpers import (
    AUTH,
    NODE_AUTH,
    NODE_TOKEN,
    TOKEN,
    node_body,
    registry_client,
    stream_body,
    transport_file,  # fmt: skip
)

Client = TestClient[Any, Any]
KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHostileTestKeyBytesHostile\n-----END PRIVATE KEY-----\n"
ADMIN_READS = ["/api/controller/keys", "/api/controller/keys/ch1", "/api/controller/lists",
               "/api/controller/lists/source_node/default", "/api/controller/monitor",
               "/controller/source_node?get_metadata", "/controller/source_node", "/controller/support_node",
               "/source_node/get_config.php?get_metadata"]  # fmt: skip


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[tuple[Client, RegistryState]]:
    async with registry_client(sqlite_url(tmp_path / "registry.sqlite3"), tmp_path) as pair:
        yield pair


async def call(client: Client, method: str, path: str, headers: dict[str, str], body: object = None) -> Any:
    async with client.request(method, path, json=body, headers=headers) as response:
        return response.status, (await response.read())


async def test_the_node_token_registers_beats_posts_streams_and_leaves(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    status, body = await call(client, "POST", "/api/nodes", NODE_AUTH, node_body("source", "127.0.0.1:7000"))
    assert status == 201, body
    node_id = json.loads(body)["node_id"]
    assert (await call(client, "POST", f"/api/nodes/{node_id}/heartbeat", NODE_AUTH,
                       {"content_ids": [], "figures": {}}))[0] == 200  # fmt: skip
    content_id, data = transport_file()
    assert (await call(client, "POST", "/api/streams", NODE_AUTH, stream_body(content_id, data, node_id=node_id)))[0] \
        == 201  # fmt: skip
    assert (await call(client, "DELETE", f"/api/nodes/{node_id}", NODE_AUTH))[0] == 204
    # The admin token works on the node routes as well.
    assert (await call(client, "POST", "/api/nodes", AUTH, node_body()))[0] == 201


async def test_the_node_token_reads_no_key_and_no_list(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    stored = await call(client, "POST", "/controller/metadata", AUTH, {"ch1": {"last_seq": 1, "private_key": KEY}})
    assert stored[0] == 200, stored
    assert (await call(client, "PUT", "/api/controller/lists/source_node/default", AUTH, []))[0] == 200
    assert (await call(client, "GET", "/api/controller/keys/ch1", AUTH))[0] == 200
    # Every way the controller takes a token, with the node token: refused, and no key in the answer.
    for path in ADMIN_READS:
        sep = "&" if "?" in path else "?"
        for where, headers in (("bearer", NODE_AUTH), ("x-token", {"X-Token": NODE_TOKEN}),
                               ("query", {})):  # fmt: skip
            url = path + (f"{sep}token={NODE_TOKEN}" if where == "query" else "")
            status, body = await call(client, "GET", url, headers)
            assert status in (401, 403), (path, where, status, body[:200])
            assert b"PRIVATE KEY" not in body and set(json.loads(body)) == {"error"}, (path, where, body[:200])
    for method, path, body in (("POST", "/controller/metadata", {"ch1": {"last_seq": 9, "private_key": KEY}}),
                               ("DELETE", "/api/controller/keys/ch1", None),
                               ("PUT", "/api/controller/lists/support_node/default", [])):  # fmt: skip
        assert (await call(client, method, path, NODE_AUTH, body))[0] in (401, 403), path
    assert (await call(client, "GET", "/api/controller/keys/ch1", AUTH))[0] == 200  # nothing was deleted


@pytest.mark.parametrize("given", [None, "", "\udcff\udcfe", "\ud800", TOKEN + "\udcff", "x" * 5000,
                                   TOKEN[:-1], TOKEN.upper()])  # fmt: skip
def test_odd_tokens_are_a_plain_no(given: str | None) -> None:
    assert tokens.matches(given, TOKEN) is False
    assert tokens.matches_any(given, (None, NODE_TOKEN, TOKEN)) is False


def test_the_right_token_matches_and_the_header_is_capped() -> None:
    assert tokens.matches(TOKEN, TOKEN) and tokens.matches_any(NODE_TOKEN, (NODE_TOKEN, TOKEN))
    assert tokens.bearer({"Authorization": f"bearer {TOKEN}"}) == TOKEN
    assert tokens.bearer({"Authorization": f"Bearer {TOKEN}" + " " * tokens.MAX_TOKEN_HEADER}) is None
    assert tokens.bearer({"Authorization": f"Basic {TOKEN}"}) is None
