"""Attacks on the registry's JSON API over the network: a real ``swarmcast registry`` process on loopback.

Writes without the token or with a wrong one, oversized and endless bodies, malformed JSON, deep nesting, huge
arrays, SQL in names and paths, a heartbeat flood. Every attack must end in a 4xx JSON answer, store nothing
(or exactly what the API allows), and leave the registry answering.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from swarmcast.registry.db import Database, sqlite_url
from tests.pg import PostgresServer
from tests.procs import LOOPBACK, free_port, swarmcast_process
from tests.registry_helpers import TOKEN, node_body, stream_body, transport_file

CID = "ab" * 20


class Registry:
    def __init__(self, port: int, db_url: str) -> None:
        self.port = port
        self.base = f"http://{LOOPBACK}:{port}"
        self.db_url = db_url

    def call(self, method: str, path: str, body: bytes | object = None, headers: dict[str, str] | None = None,
             *, token: str | None = TOKEN) -> tuple[int, Any]:  # fmt: skip
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def rows(self, table: str) -> int:
        database = Database(self.db_url)
        try:
            with database.engine.connect() as connection:
                return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
        finally:
            database.dispose()

    def raw(self, head: bytes, body: bytes = b"") -> bytes:
        """Send bytes as they are; the answer's status line and headers (or what came before a close)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as sock:
            sock.sendall(head)
            with contextlib.suppress(OSError):  # the server may answer and close before taking it all
                sock.sendall(body)
            answer = b""
            try:
                while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                    answer += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            return answer

    def healthy(self) -> bool:
        return self.call("GET", "/api/streams")[0] == 200


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry process per database for the module (the attacks leave it running for the next)."""
    tmp = tmp_path_factory.mktemp("registry")
    name = None
    if request.param == "sqlite":
        url = sqlite_url(tmp / "registry.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        name, url = server.create_database()
    port = free_port()
    args = ["registry", "--port", str(port), "--bind", LOOPBACK, "--token", TOKEN, "--state-dir", str(tmp),
            "--db", url]  # fmt: skip
    try:
        with swarmcast_process(args, stderr_path=tmp / "registry.log", wait_port=(LOOPBACK, port), start_timeout=90):
            yield Registry(port, url)
    finally:
        if name is not None:
            server.drop_database(name)


def test_writes_without_the_token_or_with_a_wrong_one_are_refused_and_store_nothing(registry: Registry) -> None:
    cid, data = transport_file()
    node_id = "00000000-0000-4000-8000-000000000000"
    writes: list[tuple[str, str, object]] = [
        ("POST", "/api/nodes", node_body()),
        ("POST", "/api/streams", stream_body(cid, data)),
        ("POST", f"/api/nodes/{node_id}/heartbeat", {}),
        ("DELETE", f"/api/nodes/{node_id}", None),
        ("POST", "/api/nodes", b"not even json"),  # refused for the token before the body is read
    ]
    for token in (None, "", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\u00e9" * 10, "x" * 5000):
        for method, path, body in writes:
            status, answer = registry.call(method, path, body, token=token)
            assert status == 401, (token, path, answer)
            assert isinstance(answer["error"], str)
    # The token in the query string or another header is not the token.
    status, _ = registry.call("POST", f"/api/nodes?token={TOKEN}", node_body(), {"X-Token": TOKEN}, token=None)
    assert status == 401
    assert registry.rows("nodes") == 0
    assert registry.rows("streams") == 0


def test_oversized_and_endless_bodies_are_413_and_the_registry_answers_on(registry: Registry) -> None:
    status, answer = registry.call("POST", "/api/nodes", b"{" + b" " * (70 * 1024) + b"}")
    assert status == 413
    assert "too large" in answer["error"]
    # A Content-Length of 10 GB: answered at once, nothing waited for.
    head = (f"POST /api/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n").encode()  # fmt: skip
    assert registry.raw(head, b"{").startswith(b"HTTP/1.1 413")
    # Chunked, with no length announced: cut off past the limit.
    head = (f"POST /api/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
    chunk = b"6000\r\n" + b" " * 0x6000 + b"\r\n"
    assert registry.raw(head, chunk * 3 + b"0\r\n\r\n").startswith(b"HTTP/1.1 413")
    # A stream's body may be larger (1 MiB) but not more.
    cid, data = transport_file()
    body = stream_body(cid, data)
    body["title"] = "x" * (1 << 20)
    assert registry.call("POST", "/api/streams", body)[0] == 413
    assert registry.healthy()


@pytest.mark.parametrize("body", [
    b"", b"{", b"\xff\xfe{}", b'{"role": "source",}', b"NaN", b'{"capacity_bps": NaN}', b"[1, 2",
    b'{"role": "source"}' * 100, b"\x00" * 100,
])  # fmt: skip
def test_malformed_json_is_400(registry: Registry, body: bytes) -> None:
    status, answer = registry.call("POST", "/api/nodes", body)
    assert status == 400, answer
    assert isinstance(answer["error"], str)


def test_numbers_that_are_not_figures_are_400(registry: Registry) -> None:
    _, answer = registry.call("POST", "/api/nodes", node_body("engine", None))
    node_id = answer["node_id"]
    for raw in (b'{"figures": {"upload_bps": 1e999}}', b'{"figures": {"upload_bps": Infinity}}',
                b'{"figures": {"peers": ' + b"9" * 5000 + b"}}", b'{"figures": {"cpu_percent": -0.0001}}'):  # fmt: skip
        status, answer = registry.call("POST", f"/api/nodes/{node_id}/heartbeat", raw)
        assert status == 400, (raw[:60], answer)


def test_deep_nesting_and_huge_arrays_are_400_without_a_traceback(registry: Registry) -> None:
    cases: list[bytes] = [
        b"[" * 30_000 + b"]" * 30_000,  # past the JSON parser's recursion limit, within 64 KiB
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        json.dumps({"role": "engine", "version": "1", "name": None, "address": None,
                    "content_ids": [], "x": {"y": {"z": {"w": {"v": 1}}}}}).encode(),
        json.dumps([0] * 20_000).encode(),
        json.dumps(node_body(content_ids=[CID] * 1_000)).encode(),
        json.dumps({**node_body(), "name": ["x"] * 10_000}).encode(),
    ]
    for raw in cases:
        status, answer = registry.call("POST", "/api/nodes", raw)
        assert status == 400, (raw[:60], answer)
        assert "Traceback" not in answer["error"]
    _, answer = registry.call("POST", "/api/nodes", node_body("engine", None))
    node_id = answer["node_id"]
    figures = {f"k{i}": i for i in range(3_000)}
    status, answer = registry.call("POST", f"/api/nodes/{node_id}/heartbeat", {"figures": figures})
    assert status == 400
    assert "keys" in answer["error"]
    assert registry.healthy()


def test_sql_in_names_and_paths_is_only_ever_text(registry: Registry) -> None:
    before = registry.rows("streams")
    cid, data = transport_file()
    for name in ("x'; DROP TABLE streams; --", "news\" OR 1=1", "a b", "%27", "news;", "../etc"):
        status, answer = registry.call("POST", "/api/streams", stream_body(cid, data, name=name))
        assert status == 400, answer
        assert "name" in answer["error"]
    # A node's display name may hold any printable text: stored and answered verbatim, as text.
    sqlish = "Robert'); DROP TABLE nodes; --"
    status, answer = registry.call("POST", "/api/nodes", node_body(name=sqlish))
    assert status == 201
    assert registry.call("GET", f"/api/nodes/{answer['node_id']}")[1]["name"] == sqlish
    for path in ("/api/streams/'%20OR%20'1'='1", "/api/streams/x';--/peers", "/api/nodes/1%20OR%201=1",
                 "/api/series?content_id=%27%20OR%201%3D1", "/api/nodes?role=engine'%20OR%20'1"):  # fmt: skip
        status, answer = registry.call("GET", path, token=None)
        assert status in (400, 404), (path, answer)
    assert registry.rows("streams") == before
    assert registry.rows("nodes") >= 1


def test_a_heartbeat_flood_is_bounded(registry: Registry) -> None:
    _, answer = registry.call("POST", "/api/nodes", node_body("engine", None, [CID]))
    node_id = answer["node_id"]
    samples_before = registry.rows("samples")
    beat = {"content_ids": [CID], "figures": {"cpu_percent": 1.0, "streams": {CID: {"viewers": 1}}}}
    statuses: list[int] = []
    started = time.monotonic()
    for _ in range(300):  # bounded in count; as fast as one client goes
        statuses.append(registry.call("POST", f"/api/nodes/{node_id}/heartbeat", beat)[0])
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0
    # At most one heartbeat a second is taken, and its figures kept at most twice per heartbeat interval:
    # two rows (the node's, the stream's) per kept heartbeat.
    accepted = statuses.count(200)
    assert accepted <= elapsed / 1.0 + 2
    assert registry.rows("samples") - samples_before <= 2 * (elapsed / 2.5 + 2)
    assert registry.healthy()
