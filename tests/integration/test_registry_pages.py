"""The registry's HTML pages served by the registry's application on a real database (SQLite and PostgreSQL):
what they show, their Content-Security-Policy, their refusals, the static files. The browser test is
test_registry_chromium.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from swarmcast.registry import queries
from swarmcast.registry.app import build_app
from swarmcast.registry.db import Database
from swarmcast.registry.state import RegistrySettings, RegistryState
from swarmcast.transport import Descriptor

EVIL = '<script>alert("x")</script>'


def transport(title: str, **extra: Any) -> bytes:
    return Descriptor(name="n", title=title, piece_size=65536, bitrate=1000, public_key=b"k" * 32, **extra).encode()


@pytest.fixture
async def site(registry_db_url: str, tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    database = Database(registry_db_url)
    database.upgrade()
    state = RegistryState(db=database, token="t", settings=RegistrySettings(state_dir=tmp_path))
    now = time.time()
    ids: dict[str, str] = {}

    def fill(conn: Any) -> None:
        news, hls = transport(EVIL), transport("Radio", hls_manifest="http://origin.example:8935/live.m3u8")
        ids["news"], ids["radio"] = Descriptor.decode(news).infohash, Descriptor.decode(hls).infohash
        ids["source"] = queries.register_node(conn, queries.NodeInfo(
            "source", "127.0.0.1:7000", "http://127.0.0.1:7000", None, "1.0", (ids["news"],), EVIL), now)  # fmt: skip
        ids["support"] = queries.register_node(conn, queries.NodeInfo(
            "support", "127.0.0.2:7001", "http://127.0.0.2:7001", 10**8, "1", (ids["news"],), "sup"), now)  # fmt: skip
        ids["engine"] = queries.register_node(conn, queries.NodeInfo(
            "engine", None, None, None, "1.0", (ids["news"],), None), now)  # fmt: skip
        queries.upsert_stream(conn, queries.StreamInfo(ids["news"], "news", EVIL, (EVIL,), "SD", 2_000_000, None,
                                                       news, ids["source"]), now)  # fmt: skip
        queries.upsert_stream(conn, queries.StreamInfo(ids["radio"], "radio", "Radio", (), None, None,
                                                       [{"name": "audio"}], hls, None), now)  # fmt: skip
        beat = queries.Heartbeat((ids["news"],), {"cpu_percent": 3.5, "rss_bytes": 50 << 20, EVIL: 1},
                                 {ids["news"]: {"viewers": 2, "upload_bps": 1_000_000}})  # fmt: skip
        queries.heartbeat(conn, ids["engine"], beat, now, 5.0)

    await database.run(fill)
    async with TestClient(TestServer(build_app(state))) as client:
        yield client, ids
    database.dispose()


async def get(client: TestClient[Any, Any], path: str, status: int = 200) -> tuple[str, dict[str, str]]:
    response = await client.get(path)
    text = await response.text()
    assert response.status == status, (path, response.status, text[:500])
    return text, dict(response.headers)


def watch_config(text: str) -> dict[str, Any]:
    found = re.search(r'<div id="watch" data-config="([^"]*)"', text)
    assert found, text
    config: dict[str, Any] = json.loads(unescape(found.group(1)))
    return config


def no_markup_from_nodes(text: str) -> None:
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", text))


async def test_stream_list(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, ids = site
    text, headers = await get(client, "/")
    no_markup_from_nodes(text)
    assert f'data-content-id="{ids["news"]}"' in text and f'data-content-id="{ids["radio"]}"' in text
    assert '<td class="viewers">2</td>' in text and '<td class="live">live</td>' in text
    assert '<td class="bitrate">2.0 Mbit/s</td>' in text  # the API's bits per second
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "media-src" not in headers["Content-Security-Policy"]  # only the pages with a player play media


async def test_stream_page_and_watch_page(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, ids = site
    for path in ("/streams/news", f"/streams/{ids['news']}", "/watch/news"):
        text, headers = await get(client, path)
        no_markup_from_nodes(text)
        config = watch_config(text)
        # The engine is pointed at the support node's transport file (a source with support nodes serves them).
        assert config["query"] == {"url": "http://127.0.0.2:7001/app/get_transport_file?format=raw"}, config
        assert config["engine"] == "http://127.0.0.1:6878" and config["hls"] is None, config
        assert "connect-src 'self' http://127.0.0.1:6878;" in headers["Content-Security-Policy"] + ";"
        assert "media-src 'self' blob:" in headers["Content-Security-Policy"]
    stream_page, _ = await get(client, "/streams/news")
    assert f'href="/nodes/{ids["support"]}"' in stream_page and 'id="chart-viewers"' in stream_page
    assert "1 source · 1 support · 0 start · 1 engine" in stream_page  # counted from the stream's nodes


async def test_watch_page_engine_address_and_hls_origin(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, _ = site
    text, headers = await get(client, "/watch/radio?engine=http%3A%2F%2F127.0.0.9%3A7878")
    config = watch_config(text)
    assert config["engine"] == "http://127.0.0.9:7878" and config["hls"] == "http://origin.example:8935/live.m3u8"
    assert "connect-src 'self' http://127.0.0.9:7878 http://origin.example:8935" in headers["Content-Security-Policy"]
    assert config["query"] == {"id": config["content_id"]}  # no live node: the engine looks the id up itself
    text, headers = await get(client, "/watch/radio?engine=http://10.1.2.3:6878", 400)
    assert "not a loopback address" in text and "script-src 'self'" in headers["Content-Security-Policy"]
    await get(client, "/watch/nothing", 404)
    await get(client, "/streams/nothing", 404)


async def test_node_page(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, ids = site
    text, _ = await get(client, f"/nodes/{ids['engine']}")
    assert "cpu_percent" in text and "50.0 MiB" in text and 'href="/streams/news"' in text
    assert 'id="chart-cpu"' in text and 'id="chart-memory"' in text
    no_markup_from_nodes(text)
    source, _ = await get(client, f"/nodes/{ids['source']}")
    no_markup_from_nodes(source)
    await get(client, "/nodes/nope", 404)


async def test_dashboard(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, ids = site
    text, _ = await get(client, "/dashboard")
    for chart in ("viewers", "upload", "delay", "startup", "stalls", "cpu", "memory"):
        assert f'id="chart-{chart}"' in text
    no_markup_from_nodes(text)
    text, _ = await get(client, "/dashboard?stream=news&refresh=2&seconds=60")
    assert "&quot;scope&quot;:&quot;stream&quot;" in text and ids["news"] in text
    await get(client, "/dashboard?stream=nothing", 404)
    for bad in ("refresh=0", "refresh=nan", "seconds=5", "seconds=1e9", "refresh=x"):
        text, _ = await get(client, f"/dashboard?{bad}", 400)
        assert bad.split("=")[0] + ":" in text


async def test_static_files(site: tuple[TestClient[Any, Any], dict[str, str]]) -> None:
    client, _ = site
    for name, kind in (("uPlot.iife.min.js", "application/javascript"), ("uPlot-LICENSE", "text/plain"),
                       ("hls.min.js", "application/javascript"), ("dashboard.js", "application/javascript"),
                       ("uPlot.min.css", "text/css")):  # fmt: skip
        response = await client.get(f"/static/{name}")
        assert response.status == 200 and response.content_type == kind, name
        assert len(await response.read()) > 100
    for name in ("..%2Fweb.py", "web.py", "nothing.js", "uPlot.d.ts"):
        assert (await client.get(f"/static/{name}")).status == 404, name
