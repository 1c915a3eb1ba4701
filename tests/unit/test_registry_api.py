"""The registry's JSON API (registry/api.py) through aiohttp's test client, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmcast.registry import queries
from swarmcast.registry.api import HeartbeatGate
from swarmcast.registry.app import build_app
from swarmcast.registry.db import Database
from swarmcast.registry.state import RegistrySettings, RegistryState
from tests.procs import free_port
from tests.registry_helpers import AUTH, TOKEN, node_body, registry_client, stream_body, transport_file

Client = TestClient[Any, Any]


@pytest.fixture
async def registry(registry_db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Client, RegistryState]]:
    async with registry_client(registry_db_url, tmp_path) as pair:
        yield pair


async def post(client: Client, path: str, body: object, status: int = 200) -> Any:
    async with client.post(path, json=body, headers=AUTH) as response:
        answer = await response.json() if response.status != 204 else None
        assert response.status == status, answer
        return answer


async def get(client: Client, path: str, status: int = 200) -> Any:
    async with client.get(path) as response:
        answer = await response.json()
        assert response.status == status, answer
        return answer


async def register(client: Client, role: str = "support", address: str | None = "127.0.0.1:7001",
                   content_ids: list[str] | None = None) -> str:  # fmt: skip
    answer = await post(client, "/api/nodes", node_body(role, address, content_ids), 201)
    assert answer["heartbeat_interval"] == 5.0
    assert answer["timeout"] == 15.0
    node_id: str = answer["node_id"]
    return node_id


async def test_source_support_and_engines_make_a_live_stream_with_counts_and_peers(
    registry: tuple[Client, RegistryState],
) -> None:
    client, _state = registry
    cid, data = transport_file()
    source = await register(client, "source", "127.0.0.1:7000", [cid])
    answer = await post(client, "/api/streams", stream_body(cid, data, node_id=source), 201)
    assert answer == {"content_id": cid, "name": "news", "created": True}
    await register(client, "support", "127.0.0.2:7001", [cid])
    await register(client, "start", "0.0.0.0:7002", [cid])  # the request's address stands in for 0.0.0.0
    engine = await register(client, "engine", None, [cid])
    await post(client, f"/api/nodes/{engine}/heartbeat",
               {"content_ids": [cid], "figures": {"cpu_percent": 2.5, "rss_bytes": 50_000_000,
                                                  "streams": {cid: {"viewers": 2, "upload_bps": 1000}}}})  # fmt: skip

    [stream] = (await get(client, "/api/streams"))["streams"]
    assert stream["content_id"] == cid
    assert stream["live"] is True
    assert stream["viewers"] == 2
    assert stream["nodes"] == {"source": 1, "support": 1, "start": 1, "engine": 1, "broadcaster": 0}
    detail = await get(client, "/api/streams/news")
    assert {n["role"] for n in detail["nodes"]} == {"source", "support", "start", "engine"}
    assert detail["node_counts"] == stream["nodes"]
    assert (await get(client, f"/api/streams/{cid.upper()}"))["name"] == "news"
    peers = (await get(client, f"/api/streams/{cid}/peers"))["peers"]
    assert peers[0] == {"role": "start", "address": "127.0.0.1:7002"}
    assert [p["role"] for p in peers] == ["start", "support", "source"]
    async with client.get("/api/streams/news/transport") as response:
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert await response.read() == data
    node = await get(client, f"/api/nodes/{engine}")
    assert node["figures"]["streams"][cid]["viewers"] == 2
    assert node["state"] == "live"
    series = await get(client, f"/api/nodes/{engine}/series?seconds=60")
    assert series["cpu_percent"] == [2.5]
    network = await get(client, f"/api/series?content_id={cid}&seconds=60")
    assert network["viewers"] == [2]
    assert network["viewer_upload_bps"] == [1000]
    assert (await get(client, "/api/series"))["viewers"] == [2]
    assert len((await get(client, "/api/nodes"))["nodes"]) == 4
    assert len((await get(client, "/api/nodes?role=engine&state=live"))["nodes"]) == 1

    # A re-POST by the source updates the stream.
    again = await post(client, "/api/streams", stream_body(cid, data, node_id=source, title="Late news"), 201)
    assert again["created"] is False
    assert (await get(client, "/api/streams/news"))["title"] == "Late news"

    # Clean shutdown: left at once; the stream is off the air without its source.
    async with client.delete(f"/api/nodes/{source}", headers=AUTH) as response:
        assert response.status == 204
    assert (await get(client, f"/api/nodes/{source}"))["state"] == "left"
    assert (await get(client, "/api/streams/news"))["live"] is False
    await post(client, f"/api/nodes/{source}/heartbeat", {}, 404)  # the node must register again


async def test_unknown_things_are_404_in_json(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    unknown = "00000000-0000-4000-8000-000000000000"
    for path in ("/api/streams/nosuch", f"/api/streams/{'0' * 40}", "/api/streams/nosuch/transport",
                 "/api/streams/nosuch/peers", f"/api/nodes/{unknown}", f"/api/nodes/{unknown}/series",
                 "/api/nodes/not-a-uuid", "/api/series?content_id=nosuch", "/api/nothing"):  # fmt: skip
        answer = await get(client, path, 404)
        assert isinstance(answer["error"], str)
    await post(client, f"/api/nodes/{unknown}/heartbeat", {"figures": {}}, 404)
    async with client.delete(f"/api/nodes/{unknown}", headers=AUTH) as response:
        assert response.status == 404
    async with client.put("/api/streams", headers=AUTH) as response:
        assert response.status == 405
        assert "error" in await response.json()


async def test_writes_need_the_token(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic cmVnaXN0cnk="},
                    {"Authorization": "Bearer"}):  # fmt: skip
        async with client.post("/api/nodes", json=node_body(), headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in await response.json()
    assert (await get(client, "/api/nodes"))["nodes"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"role": "king"}, "role"),
    (node_body(address="127.0.0.1"), "address"),
    (node_body(address="127.0.0.1:0"), "address"),
    (node_body(address="127.0.0.1:99999"), "address"),
    (node_body(address="[::1:7000"), "address"),
    (node_body(address="bad host:7000"), "address"),
    ({**node_body(), "address": 7000}, "address"),
    (node_body(http="ftp://127.0.0.1:1"), "http"),
    (node_body(http="http://user:pw@127.0.0.1:1"), "http"),
    (node_body(capacity_bps=True), "capacity_bps"),
    (node_body(capacity_bps=-1), "capacity_bps"),
    (node_body(version=""), "version"),
    (node_body(version="x" * 41), "version"),
    (node_body(content_ids=["xyz"]), "content_ids[0]"),
    (node_body(content_ids=["ab" * 20] * 65), "content_ids"),
    (node_body(name="a\x00b"), "name"),
    ([], "JSON object"),
])  # fmt: skip
async def test_bad_node_fields_are_400_naming_the_field(
    registry: tuple[Client, RegistryState], body: object, field: str
) -> None:
    client, _state = registry
    answer = await post(client, "/api/nodes", body, 400)
    assert field in answer["error"]


async def test_bad_stream_fields_are_400_naming_the_field(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    cid, data = transport_file()
    other_cid, _other = transport_file()
    cases: list[tuple[dict[str, Any], str]] = [
        (stream_body("zz" * 20, data), "content_id"),
        (stream_body(other_cid, data), "SHA-1"),
        (stream_body(cid, data, name="Upper"), "name"),
        (stream_body(cid, data, name=".hidden"), "name"),
        (stream_body(cid, data, name="ab" * 20), "name"),
        (stream_body(cid, data, name="x" * 65), "name"),
        (stream_body(cid, data, title="t" * 201), "title"),
        (stream_body(cid, data, categories="sport"), "categories"),
        (stream_body(cid, data, categories=["Sport!"]), "categories[0]"),
        (stream_body(cid, data, bitrate=1.5), "bitrate"),
        (stream_body(cid, data, renditions=[{"name": {"deep": 1}}]), "renditions[0]"),
        (stream_body(cid, data, transport="not base64!"), "transport"),
        (stream_body(cid, data, node_id="../../etc"), "node_id"),
        (stream_body(cid, data, node_id="00000000-0000-4000-8000-000000000000"), "node_id"),
    ]
    for body, field in cases:
        answer = await post(client, "/api/streams", body, 400)
        assert field in answer["error"], (field, answer)
    # Bytes whose SHA-1 is the content id but that are no transport file are refused too.
    junk = b"d4:junki1ee"
    junk_cid = hashlib.sha1(junk, usedforsecurity=False).hexdigest()
    body = stream_body(junk_cid, junk)
    assert "transport" in (await post(client, "/api/streams", body, 400))["error"]
    assert (await get(client, "/api/streams"))["streams"] == []


async def test_a_live_stream_keeps_its_name(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    cid, data = transport_file()
    source = await register(client, "source", "127.0.0.1:7000", [cid])
    await post(client, "/api/streams", stream_body(cid, data, node_id=source), 201)
    other_cid, other = transport_file()
    answer = await post(client, "/api/streams", stream_body(other_cid, other), 409)
    assert "news" in answer["error"]


async def test_bad_heartbeats_are_400(registry: tuple[Client, RegistryState]) -> None:
    client, state = registry
    node = await register(client, "engine", None)
    for body, field in [({"figures": {"cpu_percent": "high"}}, "figures.cpu_percent"),
                        ({"figures": {"viewers": 1.5}}, "figures.viewers"),
                        ({"figures": {"upload_bps": True}}, "figures.upload_bps"),
                        ({"figures": {"upload_bps": -1}}, "figures.upload_bps"),
                        ({"figures": {"streams": {"nothex": {}}}}, "figures.streams"),
                        ({"figures": []}, "figures"),
                        ({"content_ids": "ab"}, "content_ids")]:  # fmt: skip
        answer = await post(client, f"/api/nodes/{node}/heartbeat", body, 400)
        assert field in answer["error"], (field, answer)
    # Unknown figures are dropped, not stored.
    await post(client, f"/api/nodes/{node}/heartbeat", {"figures": {"peers": 3, "secret_sauce": "x" * 100}})
    stored = await state.db.run(lambda c: queries.get_node(c, node))
    assert stored is not None
    assert stored["figures"] == {"peers": 3}


async def test_a_node_silent_past_the_timeout_is_gone_and_a_heartbeat_revives_it(
    registry_db_url: str, tmp_path: Path
) -> None:
    async with registry_client(registry_db_url, tmp_path, sweep=True, heartbeat_timeout=0.5) as (client, _state):
        cid, data = transport_file()
        source = await register_quiet(client, "source", [cid])
        await post(client, "/api/streams", stream_body(cid, data, node_id=source), 201)
        for _ in range(200):  # bounded: 20 s at most
            if (await get(client, f"/api/nodes/{source}"))["state"] == "gone":
                break
            await asyncio.sleep(0.1)
        assert (await get(client, f"/api/nodes/{source}"))["state"] == "gone"
        assert (await get(client, "/api/streams/news"))["live"] is False
        await post(client, f"/api/nodes/{source}/heartbeat", {"content_ids": [cid]})
        assert (await get(client, f"/api/nodes/{source}"))["state"] == "live"


async def register_quiet(client: Client, role: str, content_ids: list[str]) -> str:
    answer = await post(client, "/api/nodes", node_body(role, "127.0.0.1:7000", content_ids), 201)
    node_id: str = answer["node_id"]
    return node_id


async def test_metrics_count_streams_nodes_and_heartbeats(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    cid, data = transport_file()
    source = await register(client, "source", "127.0.0.1:7000", [cid])
    await post(client, "/api/streams", stream_body(cid, data, node_id=source), 201)
    await post(client, f"/api/nodes/{source}/heartbeat", {"figures": {"upload_bps": 5}})
    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert 'swarmcast_registry_streams{state="live"} 1.0' in text
    assert 'swarmcast_registry_nodes{role="source",state="live"} 1.0' in text
    assert "swarmcast_registry_heartbeats_total 1.0" in text
    assert 'route="/api/nodes/{node_id}/heartbeat"' in text
    assert source not in text  # routes, not paths


async def test_transport_round_trips_byte_for_byte(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    cid, data = transport_file(title="Ünïcode")
    await post(client, "/api/streams", stream_body(cid, data), 201)
    async with client.get(f"/api/streams/{cid}/transport") as response:
        assert base64.b64encode(await response.read()) == base64.b64encode(data)


async def test_concurrent_writes_all_succeed(registry: tuple[Client, RegistryState]) -> None:
    """Heartbeats of many nodes at once: each a read then a write in one transaction (SQLite must not answer
    "database is locked" when two of them overlap)."""
    client, _state = registry
    cid, data = transport_file()
    nodes = [await register(client, "engine", None, [cid]) for _ in range(12)]
    beat = {"content_ids": [cid], "figures": {"cpu_percent": 1.0, "streams": {cid: {"viewers": 1}}}}

    async def beat_once(node_id: str) -> int:
        async with client.post(f"/api/nodes/{node_id}/heartbeat", json=beat, headers=AUTH) as response:
            return response.status

    for _ in range(3):
        statuses = await asyncio.gather(*(beat_once(n) for n in nodes))
        assert set(statuses) == {200}, statuses
        await asyncio.sleep(1.0)  # past the heartbeat gate
    stream_body_ = stream_body(cid, data)
    assert (await post(client, "/api/streams", stream_body_, 201))["created"] is True
    assert (await get(client, f"/api/streams/{cid}"))["viewers"] == 12


async def test_series_queries_are_checked(registry: tuple[Client, RegistryState]) -> None:
    client, _state = registry
    for query in ("seconds=abc", "seconds=0", "seconds=-5", "seconds=1e9", "seconds=" + "9" * 20,
                  "content_id=Not%20A%20Name"):  # fmt: skip
        answer = await get(client, f"/api/series?{query}", 400)
        assert "seconds" in answer["error"] or "content_id" in answer["error"]
    for query in ("role=king", "state=dead"):
        await get(client, f"/api/nodes?{query}", 400)
    # More than the retention is cut to it: the step grows so no answer has more than 720 points.
    assert (await get(client, "/api/series?seconds=999999999"))["step"] == 5.0


def test_the_heartbeat_gate_is_bounded() -> None:
    gate = HeartbeatGate(limit=3)
    assert gate.allow("a", 0.0)
    assert not gate.allow("a", 0.5)
    for name in "bcd":
        assert gate.allow(name, 1.0)
    assert len(gate._last) == 3  # "a" went first
    assert gate.allow("a", 1.1)


async def test_a_database_that_stops_answering_is_a_503(tmp_path: Path) -> None:
    """The database goes away under a running registry (with its sweeper): answers are 503, not tracebacks."""
    database = Database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    database.upgrade()
    state = RegistryState(db=database, token=TOKEN, settings=RegistrySettings(state_dir=tmp_path))
    client = TestClient(TestServer(build_app(state)))
    await client.start_server()
    working = database.engine
    database.engine = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=5").engine
    try:
        for path in ("/api/streams", "/api/nodes"):
            async with client.get(path) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
                assert "database" in (await response.json())["error"]
        async with client.post("/api/nodes", json=node_body(), headers=AUTH) as response:
            assert response.status == 503
    finally:
        await client.close()
        database.dispose()
        working.dispose()
