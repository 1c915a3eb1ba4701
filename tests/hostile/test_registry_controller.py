"""The registry's fleet controller against hostile clients, over real HTTP on loopback: no token (or a wrong one)
stores and hands out nothing and cannot fill the log; oversized or malformed bodies are refused; a flood of
authenticated monitor posts stays inside the row and byte caps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from swarmcast.fleet.controller import request
from tests.integration.test_registry_fleet import TOKEN, admin, registry
from tests.procs import free_port

KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHostileTestKeyBytesHostile\n-----END PRIVATE KEY-----\n"
WRITES = [
    ("POST", "/controller/metadata", {"ch1": {"last_seq": 1, "private_key": KEY}}),
    ("POST", "/source_node/post_data.php", {"ch1": {"last_seq": 1, "private_key": KEY}}),
    ("POST", "/controller/monitor", {"port": 9000, "type": "source"}),
    ("POST", "/monitor/data_receiver.php", {"port": 9000, "type": "source"}),
    ("PUT", "/api/controller/lists/support_node/default", [{"port": 1, "source_ip": "127.0.0.1", "source_port": 2}]),
    ("PUT", "/api/controller/lists/support_node/default/1", {"source_ip": "127.0.0.1", "source_port": 2}),
    ("DELETE", "/api/controller/keys/ch0", None),
    ("DELETE", "/api/controller/lists/source_node/default", None),
]  # fmt: skip


def monitor_body(port: int, pad: int) -> bytes:
    return json.dumps({"port": port, "type": "support", "pad": "x" * pad}).encode()


async def test_without_the_token_nothing_is_stored_or_handed_and_the_log_stays_short(tmp_path: Path) -> None:
    port = free_port()
    with registry(tmp_path, port) as base:
        # The first refused request is logged: were its decoded path logged, it would forge a log line.
        assert request("GET", f"{base}/api/controller/keys/x%0AFORGED%20line").status == 401
        assert admin("POST", f"{base}/controller/metadata", {"ch0": {"last_seq": 7, "private_key": KEY}}).status == 200
        assert admin("PUT", f"{base}/api/controller/lists/source_node/default", []).status == 200
        near = [None, "", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()]
        for token in near:
            for method, path, body in WRITES:
                headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                async with aiohttp.ClientSession() as session, session.request(
                        method, base + path, json=body, headers=headers) as answer:  # fmt: skip
                    assert answer.status == 401, (token, path, await answer.text())
                    assert await answer.json() == {"error": "bad or missing token"}
            for path in ("/controller/source_node?get_metadata", "/api/controller/keys/ch0", "/api/controller/keys",
                         "/api/controller/monitor", "/api/controller/lists"):
                query = "" if token is None else ("&" if "?" in path else "?") + f"token={token}"
                got = request("GET", base + path + query)
                assert got.status == 401 and b"PRIVATE KEY" not in got.body, (token, path)
        # What the token holder stored is all there is.
        assert json.loads(admin("GET", f"{base}/api/controller/keys").body)["keys"][0]["name"] == "ch0"
        assert len(json.loads(admin("GET", f"{base}/api/controller/keys").body)["keys"]) == 1
        lists = json.loads(admin("GET", f"{base}/api/controller/lists").body)["lists"]
        assert [(entry["kind"], entry["server"], entry["entries"]) for entry in lists] == [
            ("source_node", "default", [])]
        assert json.loads(admin("GET", f"{base}/api/controller/monitor").body) == {"nodes": []}
        # A flood of refused requests: a few log lines, not one per request.
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                async with session.post(f"{base}/controller/monitor?token=nope", data=b"{}") as answer:
                    assert answer.status == 401
    log = (tmp_path / "registry.log").read_text()
    refused_lines = [line for line in log.splitlines() if "bad or missing token" in line]
    assert 1 <= len(refused_lines) < 20, len(refused_lines)
    assert "token=nope" not in log and "PRIVATE KEY" not in log and TOKEN not in log
    assert "/api/controller/keys/x%0AFORGED%20line from 127.0.0.1: bad or missing token" in log
    assert not any(line.startswith("FORGED") for line in log.splitlines())


async def test_oversized_and_malformed_bodies_are_refused_and_a_monitor_flood_stays_inside_the_caps(
        tmp_path: Path) -> None:  # fmt: skip
    port = free_port()
    max_rows, max_bytes = 100, 1_000_000
    with registry(tmp_path, port, "--monitor-max-rows", str(max_rows), "--monitor-max-bytes", str(max_bytes)) as base:
        url = f"{base}/controller/monitor?token={TOKEN}"
        async with aiohttp.ClientSession() as session:
            # One node's monitor over 256 KiB: 413, by its Content-Length or, chunked, as it is read.
            big = monitor_body(9000, 300 * 1024)
            async with session.post(url, data=big) as answer:
                assert answer.status == 413, await answer.text()

            async def chunks() -> object:
                for _ in range(40):
                    yield b" " * 8192  # 320 KiB of whitespace before the JSON would even start

            async with session.post(url, data=chunks()) as answer:
                assert answer.status == 413
            for bad in (b"[" * 100_000 + b"]" * 100_000, b"{not json", b'{"port": 1}', b'{"port": true, "type": "x"}',
                        b"\xff\xfe"):  # fmt: skip
                async with session.post(url, data=bad) as answer:
                    assert answer.status == 400, (bad[:20], await answer.text())
            huge = b'{"a": {"last_seq": 1, "private_key": "' + b"k" * (2 << 20) + b'"}}'
            async with session.post(f"{base}/controller/metadata?token={TOKEN}", data=huge) as answer:
                assert answer.status == 413
            # streaming-utils posts monitors form-encoded (requests' data=): read as JSON all the same.
            async with session.post(url, data=monitor_body(9000, 0),
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as answer:
                assert answer.status == 200

            async def flood(accepted: int, pad: int, first_port: int, workers: int) -> list[int]:
                """Post until ``accepted`` posts were stored (at most 20 times that many tries)."""
                statuses: list[int] = []

                async def worker() -> None:
                    while statuses.count(200) < accepted and len(statuses) < 20 * accepted:
                        port = first_port + len(statuses) % 5
                        async with session.post(url, data=monitor_body(port, pad)) as answer:
                            statuses.append(answer.status)

                await asyncio.gather(*(worker() for _ in range(workers)))
                return statuses

            # Small posts: the row cap binds. Then big ones: the byte cap binds.
            statuses = await flood(2 * max_rows, 100, 9000, 24)  # past the 16 waiting: 503s
            assert set(statuses) <= {200, 503} and statuses.count(200) >= 2 * max_rows, sorted(set(statuses))
            rows = await stored_rows(session, base, 9000)
            assert 0 < rows <= max_rows, rows
            statuses = await flood(40, 50_000, 9100, 8)
            assert statuses.count(200) >= 40, sorted(set(statuses))  # 2 MB pushed for a 1 MB cap
            big_rows = await stored_rows(session, base, 9100)
            assert 0 < big_rows * 50_000 <= max_bytes, big_rows
            assert big_rows + await stored_rows(session, base, 9000) <= max_rows
        # Still answering, and it says so.
        assert request("GET", f"{base}/api/controller/monitor?token={TOKEN}").status == 200


async def stored_rows(session: aiohttp.ClientSession, base: str, first_port: int) -> int:
    total = 0
    for node_port in range(first_port, first_port + 5):
        async with session.get(f"{base}/api/controller/monitor/127.0.0.1/{node_port}?seconds=3600",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as answer:  # fmt: skip
            total += len((await answer.json())["t"])
    return total
