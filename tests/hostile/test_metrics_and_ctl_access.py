"""Attacks on /metrics and the engine's control endpoints, with real processes: /metrics keeps the web
interface's token and address rules on a node and the playback API's Host rule on an engine; the engine's
/app/sessions and /app/settings refuse cross-site pages, remote writes, form posts and bad values."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from tests.integration.chain import HOST, engine, exchange, signal_source, source_node
from tests.integration.test_metrics import promtool_check, samples, scrape, value

TOKEN = "metrics-t0ken"


async def raw_get(local_ip: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    """What the node answers one GET sent from ``local_ip`` (b"" when it closes the connection without a word)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]  # fmt: skip
    return await exchange(local_ip, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))  # "\xff" as 0xff


async def test_metrics_keep_the_web_interfaces_token_and_address_rules(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        # Bound to all addresses: 127.0.0.2 reaches it as a remote host would; 127.0.0.3 is a --monitor-node-ip.
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bind", "0.0.0.0", "--bitrate", "125000",
                                                 "--service-access-token", TOKEN, "--monitor-node-ip", "127.0.0.3"))
        port, bearer = source.port, {"Authorization": f"Bearer {TOKEN}"}
        ok = b"HTTP/1.1 200"
        # The token: in the path as every /app path, or as a bearer token on /metrics; nothing without it.
        assert (await raw_get(HOST, port, f"/app/{TOKEN}/metrics")).startswith(ok)
        answer = await raw_get(HOST, port, "/metrics", bearer)
        assert answer.startswith(ok) and b"swarmcast_build_info{" in answer
        for path, headers in (("/metrics", None), ("/metrics", {"Authorization": "Bearer wrong"}),
                              ("/metrics", {"Authorization": f"Basic {TOKEN}"}), ("/app/metrics", None),
                              ("/metrics", {"Authorization": "Bearer \xff\xfe"}),  # not UTF-8: no 500
                              ("/metrics", {"Authorization": f"Bearer {TOKEN}\xff"}),
                              ("/app/wrong/metrics", None), (f"/app/{TOKEN[:-1]}/metrics", None)):  # fmt: skip
            answer = await raw_get(HOST, port, path, headers)
            assert answer.startswith(b"HTTP/1.1 403"), (path, headers, answer[:200])
            assert b"swarmcast_" not in answer
        # The address rule: a remote address gets no answer at all, token or not; a --monitor-node-ip does.
        assert await raw_get("127.0.0.2", port, "/metrics", bearer) == b""
        assert await raw_get("127.0.0.2", port, f"/app/{TOKEN}/metrics") == b""
        assert (await raw_get("127.0.0.3", port, "/metrics", bearer)).startswith(ok)


async def test_engine_metrics_follow_the_playback_apis_host_rule(tmp_path: Path) -> None:
    with engine(tmp_path) as engine_url:
        port = int(engine_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(10):
                answer = await reader.read()
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 421"), answer[:200]  # DNS rebinding: a page may not read it
        async with aiohttp.ClientSession() as session:
            text = await scrape(session, f"{engine_url}/metrics")
        assert value(samples(text), "swarmcast_broadcasts", state="playing") == 0
        checked = promtool_check(text)
        assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout + checked.stderr


async def raw(port: int, request: str, local_ip: str = HOST) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    try:
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def post(body: str, *, content_type: str = "application/json", extra: str = "") -> str:
    return (f"POST /app/settings HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body.encode())}\r\nConnection: close\r\n{extra}\r\n{body}")  # fmt: skip


async def test_engine_control_endpoints_refuse_what_they_must(tmp_path: Path) -> None:
    with engine(tmp_path, "--http-bind", "0.0.0.0") as engine_url:
        port = int(engine_url.rsplit(":", 1)[1])
        # A page of another site (a browser says so) may not list sessions nor change settings.
        cross = "Sec-Fetch-Site: cross-site\r\n"
        listing = await raw(port, f"GET /app/sessions HTTP/1.1\r\nHost: {HOST}\r\n{cross}Connection: close\r\n\r\n")
        assert listing.startswith(b"HTTP/1.1 403"), listing[:200]
        assert (await raw(port, post('{"upload_slots": 1}', extra=cross))).startswith(b"HTTP/1.1 403")
        # A form post (no preflight) cannot carry JSON's content type: refused.
        assert (await raw(port, post('{"upload_slots": 1}', content_type="text/plain"))).startswith(b"HTTP/1.1 415")
        # Writes from this machine only (the API may be bound wider for players).
        remote = await raw(port, post('{"upload_slots": 1}'), local_ip="127.0.0.2")
        assert remote.startswith(b"HTTP/1.1 403") and b"this machine only" in remote, remote[:300]
        # Every value is checked before anything changes; the error names the key.
        for body, key in (('{"upload_slots": -1}', b"upload_slots"), ('{"max_peers": 0}', b"max_peers"),
                          ('{"upload_limit": 1.5}', b"upload_limit"), ('{"upload_slots": true}', b"upload_slots"),
                          ('{"upload_slots": 2, "bogus": 1}', b"bogus"), ("[1]", b"JSON object"),
                          ("{", b"not JSON"), ("[" * 100_000, b"over")):  # fmt: skip
            answer = await raw(port, post(body))
            status = b"HTTP/1.1 413" if key == b"over" else b"HTTP/1.1 400"
            assert answer.startswith(status) and key in answer, (body[:40], answer[:300])
        async with aiohttp.ClientSession() as http, http.get(f"{engine_url}/app/settings") as response:
            settings = await response.json()
        assert settings == {"response": {"upload_slots": 16, "upload_limit": 0, "max_peers": 60}, "error": None}
