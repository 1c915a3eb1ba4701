"""The node web interface with real processes: /app/monitor's fields, /app/update on running nodes, the token,
and the rule that only the local machine (and --monitor-node-ip) may use it without --service-remote-access."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.chain import HOST, exchange, signal_source, source_node, support_node
from tests.peerclient import TestPeer

TOKEN = "s3cret-token"
FAST = ("--stats-report-interval", "0.3", "--stats-report-peers")
# Every field /app/monitor answers on every node (source_url and source_status on a source only).
FIELDS = {
    "version", "type", "infohash", "port", "max_connections", "max_peers", "max_upload_slots", "upload_limit",
    "download_speed",
    "upload_speed", "connected_peers_count", "connected_peers", "upload_slots", "hls_manifest_url",
    "download_from", "upload_to", "bitrate", "last_piece", "downloaded", "uploaded", "cache_type", "cache_bytes",
    "cache_max_bytes", "cache_pieces", "uptime", "support_nodes", "metatrackers", "rejected_connections",
    "rejected_connections_total", "stats_report_interval", "updated_at",
}  # fmt: skip
SOURCE_FIELDS = FIELDS | {"source_url", "source_status"}
PEER_FIELDS = {"address", "direction", "downloaded", "uploaded", "download_speed", "upload_speed", "choked",
               "choking_us", "interested", "source", "support_node", "connected_for"}  # fmt: skip


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def poll(session: aiohttp.ClientSession, url: str, check: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """The monitor object once ``check`` holds for it (fails with the last one seen after ``timeout`` s)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await get(session, url)
        assert status == 200, body
        if check(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout} s; last monitor: {body}")
        await asyncio.sleep(0.2)


def peer_entry(figures: Any, port: int) -> Any:
    return next((p for p in figures["connected_peers"] if p["address"] == [HOST, port]), None)


async def test_monitor_fields_token_and_update_on_running_nodes(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--service-access-token", TOKEN, *FAST))
        url = f"http://{HOST}:{source.port}/app/{TOKEN}/get_transport_file?format=raw"
        support = stack.enter_context(support_node(tmp_path, url, "--download-from", f"{HOST}:{source.port}", *FAST))
        source_app = f"http://{HOST}:{source.port}/app/{TOKEN}"
        support_app = f"http://{HOST}:{support}/app"
        async with aiohttp.ClientSession() as session:
            # -- the source's monitor, with the token: every field, the support node holding its credential ------
            figures = await poll(session, f"{source_app}/monitor", lambda f: f["support_nodes"] == [[HOST, support]]
                                 and f["last_piece"] is not None and peer_entry(f, support) is not None)  # fmt: skip
            assert set(figures) == SOURCE_FIELDS
            assert figures["type"] == "source"
            assert figures["infohash"] == source.descriptor().infohash
            assert figures["source_url"] == signal_url
            assert set(figures["source_status"]) >= {"connected", "reconnects", "last_error"}
            assert figures["bitrate"] == source.descriptor().bitrate
            assert figures["port"] == source.port
            assert figures["hls_manifest_url"] is None
            assert figures["cache_bytes"] > 0
            assert figures["cache_max_bytes"] >= figures["cache_bytes"]
            entry = peer_entry(figures, support)
            assert set(entry) == PEER_FIELDS
            assert entry["support_node"] is True
            assert entry["direction"] == "in"
            status, monitoring = await get(session, f"{source_app}/monitoring")
            assert status == 200
            assert set(monitoring) == SOURCE_FIELDS
            # -- the token: missing or wrong is a 403 on every /app path, and changes nothing ------------------
            base = f"http://{HOST}:{source.port}/app"
            for path in ("/monitor", "/wrong/monitor", "/wrong/update?max_peers=1", "/update?max_peers=1",
                         "/s3cret-tokenX/monitor", "/nothing-here"):  # fmt: skip
                status, body = await get(session, base + path)
                assert status == 403, (path, status, body)
            # -- the support node's monitor (no token): its download_from as streaming-utils reads it ----------
            figures = await poll(session, f"{support_app}/monitor", lambda f: peer_entry(f, source.port) is not None)
            assert set(figures) == FIELDS
            assert figures["type"] == "support"
            assert figures["download_from"] == [[HOST, source.port]]
            assert peer_entry(figures, source.port)["source"] is True

            # -- /update on the running support node: download_from elsewhere, so it stops asking the source ---
            status, answer = await get(session, f"{support_app}/update?max_peers=7&max_upload_slots=3"
                                                f"&download_from=127.0.0.1:1&upload_to=127.0.0.5:0")  # fmt: skip
            assert status == 200, answer
            assert answer == {"max_peers": 7, "max_upload_slots": 3, "upload_limit": 0,
                              "download_from": [["127.0.0.1", 1]], "upload_to": [["127.0.0.5", 0]]}  # fmt: skip
            _, figures = await get(session, f"{support_app}/monitor")
            assert (figures["max_peers"], figures["max_upload_slots"]) == (7, 3)
            assert figures["download_from"] == [["127.0.0.1", 1]]
            assert figures["upload_to"] == [["127.0.0.5", 0]]
            await poll(session, f"{source_app}/monitor", lambda f: peer_entry(f, support)["interested"] is False)
            status, answer = await get(session, f"{support_app}/update?download_from={HOST}:{source.port}")
            assert answer["download_from"] == [[HOST, source.port]]
            await poll(session, f"{source_app}/monitor", lambda f: peer_entry(f, support)["interested"] is True)

            # -- /update on the running source: no upload slots chokes the support node, slots back unchoke it --
            status, answer = await get(session, f"{source_app}/update?max_upload_slots=0")
            assert (status, answer["max_upload_slots"]) == (200, 0)
            await poll(session, f"{support_app}/monitor", lambda f: peer_entry(f, source.port)["choking_us"] is True)
            await get(session, f"{source_app}/update?max_upload_slots=8")
            await poll(session, f"{support_app}/monitor", lambda f: peer_entry(f, source.port)["choking_us"] is False)
            # A lower max_peers drops the surplus at once, an ordinary peer before the support node.
            viewer = await TestPeer.connect(HOST, source.port, source.descriptor().content_id, listen_port=1)
            try:
                assert await viewer.window() is not None
                await poll(session, f"{source_app}/monitor", lambda f: f["connected_peers_count"] == 2)
                status, answer = await get(session, f"{source_app}/update?max_peers=1")
                assert (status, answer["max_peers"]) == (200, 1)
                assert await viewer.wait_closed(5.0), "the viewer was not dropped when max_peers went to 1"
            finally:
                viewer.close()
            figures = await poll(session, f"{source_app}/monitor", lambda f: f["connected_peers_count"] == 1)
            assert figures["max_peers"] == 1
            assert figures["support_nodes"] == [[HOST, support]]

            # -- a bad value is a 400 naming the parameter, and nothing changes -------------------------------
            for query, parameter in (("max_peers=abc", "max_peers"), ("max_peers=0", "max_peers"),
                                     ("max_upload_slots=-1", "max_upload_slots"),
                                     ("max_peers=5&download_from=example.com:80", "download_from"),
                                     ("upload_to=10.0.0.1", "upload_to"), ("reload_filter=yes", "reload_filter"),
                                     ("max_peers=4&bogus=1", "bogus")):  # fmt: skip
                status, body = await get(session, f"{source_app}/update?{query}")
                assert status == 400, (query, body)
                assert body["error"].startswith(parameter), (query, body)
            _, figures = await get(session, f"{source_app}/monitor")
            assert (figures["max_peers"], figures["max_upload_slots"]) == (1, 8)


async def http_from(local_ip: str, port: int, path: str = "/app/monitor") -> bytes:
    """What the node answers a GET sent from ``local_ip`` (b"" if it closes the connection without a word)."""
    return await pipelined_from(local_ip, port, [path])


async def pipelined_from(local_ip: str, port: int, paths: list[str]) -> bytes:
    """Everything the node sends back to ``paths`` requested one after the other on one kept-alive connection
    (the last request asks for the connection to be closed)."""
    heads = [f"GET {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\n" for p in paths]
    heads[-1] += "Connection: close\r\n"
    return await exchange(local_ip, port, "".join(head + "\r\n" for head in heads).encode())


async def test_remote_addresses_refused_without_service_remote_access(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        # Bound to all addresses: 127.0.0.2 reaches it as any remote host would.
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bind", "0.0.0.0",
                                                 "--monitor-node-ip", "127.0.0.3", "--stats-report-interval", "0.3"))
        transport = str(next(source.publish_dir.glob("*.acelive")))
        open_node = stack.enter_context(support_node(tmp_path, transport, "--bind", "0.0.0.0",
                                                     "--download-from", f"{HOST}:{source.port}",
                                                     "--service-remote-access"))  # fmt: skip
        assert await http_from("127.0.0.2", source.port) == b"", "a remote address got an answer"
        assert (await http_from("127.0.0.3", source.port)).startswith(b"HTTP/1.1 200"), "--monitor-node-ip refused"
        assert (await http_from("127.0.0.1", source.port)).startswith(b"HTTP/1.1 200"), "the local machine refused"
        assert (await http_from("127.0.0.2", open_node)).startswith(b"HTTP/1.1 200"), "--service-remote-access"
        # The internal tracker is for viewers anywhere: a remote engine announces; but a connection let in for the
        # tracker does not reach the web interface after it.
        announce = f"/announce?info_hash={'%00' * 20}&peer_id={'x' * 20}&port=9&uploaded=0&downloaded=0&left=0"
        assert (await http_from("127.0.0.2", source.port, announce)).startswith(b"HTTP/1.1 200"), "tracker refused"
        both = await pipelined_from("127.0.0.2", source.port, [announce, "/app/monitor"])
        assert both.startswith(b"HTTP/1.1 200") and both.count(b"HTTP/1.1 ") == 1, both[:400]
        assert b'"infohash"' not in both
        # The peer protocol from the same remote address is served as ever.
        peer = await TestPeer.connect(HOST, source.port, source.descriptor().content_id, local_host="127.0.0.2")
        try:
            assert await peer.window() is not None, "the peer protocol from 127.0.0.2 was refused"
        finally:
            peer.close()
        async with aiohttp.ClientSession() as session:
            figures = await poll(session, f"http://{HOST}:{source.port}/app/monitor",
                                 lambda f: f["rejected_connections_total"] >= 1)  # fmt: skip
        assert figures["rejected_connections"] == {"web interface from a remote address": 1}  # the demux's count
