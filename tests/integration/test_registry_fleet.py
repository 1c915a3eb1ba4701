"""``swarmcast fleet`` with its controller pointed at the registry, end to end, on loopback "servers".

The operator writes the stream lists into the registry with the write token (the admin API). 127.0.0.2 starts a
source from the list the registry keeps for it, 127.0.0.3 a support node from its own list (chosen by the requesting
address). The monitoring and metadata pushes go to the registry (the ``.sauth`` sealed there). Then 127.0.0.2 is
lost, the operator moves the stream to 127.0.0.5, which restores it from the registry (``start-sources
--get-remote-metadata``, a fresh fleet root): same content id, piece numbers that continue, and the support node
follows it. Last, every HTML page, every log file, every unauthenticated API answer and the database files are
searched for the key (PEM, DER, the raw 32 bytes; as they are, in base64 and in hex): none holds it, while the
authenticated key answer does (the search can find it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

from swarmcast.fleet.config import load_app_config
from swarmcast.fleet.controller import Answer, ControllerError, node_monitor, request
from swarmcast.registry import controller_store
from swarmcast.registry.controller import prepare
from swarmcast.registry.db import Database, sqlite_url
from swarmcast.registry.state import RegistrySettings, RegistryState
from tests.integration.test_fleet_nodes import (
    env,
    fleet,
    monitor_with_a_piece,
    ok,
    signal_url,
    source_entry,
    stopped_at_end,
    write_root,
)
from tests.procs import free_port, swarmcast_process

HOST = "127.0.0.1"
SERVER_A, SERVER_B, SERVER_D = "127.0.0.2", "127.0.0.3", "127.0.0.5"
TOKEN = "registry-write-token-1234"
NODE_TOKEN = "node-token-5678"
MAX_PAGES = 60  # HTML pages followed from the registry's own links, at most


@contextlib.contextmanager
def registry(tmp: Path, port: int, *extra: str) -> Iterator[str]:
    """``swarmcast registry`` on loopback with the write token; its log in ``tmp/registry.log``."""
    args = ["registry", "--port", str(port), "--bind", HOST, "--state-dir", str(tmp / "registry"),
            "--token", TOKEN, *extra]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "registry.log", wait_port=(HOST, port), start_timeout=90):
        yield f"http://{HOST}:{port}"


def admin(method: str, url: str, body: object | None = None, token: str = TOKEN) -> Answer:
    """The admin API as an operator's script calls it (urllib-like, Authorization header)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def key_forms(sauth: bytes) -> dict[str, bytes]:
    """The ways a leaked key could show: the .sauth as it is (and JSON-escaped), each base64 line of its PEM, its
    DER and its raw 32 bytes, each of those also in base64 (standard and URL-safe) and in hex."""
    key = load_pem_private_key(sauth, None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    text = sauth.strip()
    forms = {"sauth": text, "sauth json": json.dumps(text.decode())[1:-1].encode(), "der": der, "raw": raw}
    for i, line in enumerate(line for line in text.splitlines() if not line.startswith(b"-----")):
        forms[f"pem line {i}"] = line
    for name, value in list(forms.items()):
        if name.startswith("pem line"):
            continue
        forms[f"{name} hex"] = value.hex().encode()
        forms[f"{name} base64"] = base64.b64encode(value).rstrip(b"=")
        forms[f"{name} base64url"] = base64.urlsafe_b64encode(value).rstrip(b"=")
    return forms


def leaks(where: str, data: bytes, forms: dict[str, bytes]) -> list[str]:
    lowered = data.lower()
    return [f"{where}: {name}" for name, form in forms.items()
            if form in data or (name.endswith(" hex") and form.lower() in lowered)]  # fmt: skip


def get(url: str) -> Answer:
    return request("GET", url, limit=8 * 1024 * 1024)


def html_pages(base: str, start: list[str]) -> dict[str, bytes]:
    """Every page reachable from ``start`` by the registry's own links (same origin, bounded)."""
    seen: dict[str, bytes] = {}
    queue = [urljoin(base, path) for path in start]
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0)
        if url in seen:
            continue
        answer = get(url)
        seen[url] = answer.body
        for link in re.findall(rb'(?:href|src)="([^"#]+)"', answer.body):
            target = urljoin(url, link.decode("utf-8", "replace"))
            if target.startswith(base) and target not in seen:
                queue.append(target)
    return seen


OUTPUTS: list[bytes] = []  # every fleet run's stdout and stderr, searched for the key with the logs


async def run(config: Path, *args: str) -> str:
    result = await asyncio.to_thread(fleet, config, *args)
    OUTPUTS.append((result.stdout + result.stderr).encode())
    return ok(result)


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await asyncio.to_thread(check):
                return
        except ControllerError:  # a node still starting: asked again until the deadline
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.5)


@pytest.mark.timeout(175)
async def test_fleet_through_the_registry_restores_on_a_new_server_and_the_key_leaks_nowhere(
        tmp_path: Path) -> None:  # fmt: skip
    rport, p_source, p_b = free_port(), free_port(), free_port()
    tracker = f"{HOST}:{free_port()}"  # the same trackers on every server (they are in the content id)

    with registry(tmp_path, rport) as base:
        ctl = f"{base}/controller"

        def root(name: str, ip: str) -> Path:
            return write_root(tmp_path / name, source_node=f"{ctl}/source_node?token={TOKEN}",
                              support_node=f"{ctl}/support_node?token={TOKEN}", monitor=f"{ctl}/monitor?token={TOKEN}",
                              metadata=f"{ctl}/metadata?token={TOKEN}", bind=ip, tracker=tracker,
                              token=NODE_TOKEN)  # fmt: skip

        a, b, d = root("a", SERVER_A), root("b", SERVER_B), root("d", SERVER_D)
        lists = f"{base}/api/controller/lists"
        with signal_url(tmp_path) as url, stopped_at_end(a, b, d):
            entry = source_entry("ch1", p_source, url, extended_logging=0, upload_to=[f"{SERVER_B}:{p_b}"])
            assert admin("PUT", f"{lists}/source_node/{SERVER_A}", [entry]).status == 200
            assert admin("PUT", f"{lists}/support_node/{SERVER_B}", [
                {"port": p_b, "source_ip": SERVER_A, "source_port": p_source, "extended_logging": 0}]).status == 200
            assert admin("PUT", f"{lists}/support_node/default", []).status == 200

            assert f"up: source {p_source} (ch1)" in await run(a, "start-sources")
            out_b = await run(b, "start-support")
            assert f"up: support {p_b} ({SERVER_A}:{p_source})" in out_b, out_b
            # The support list went by address: server A's request gets the default (empty) list.
            by_a = request("GET", f"{ctl}/support_node?token={TOKEN}", source=SERVER_A)
            assert json.loads(by_a.body) == {"result": []}

            # The node's snapshot (refreshed every 4 s) may predate its first piece: pushed once it shows one.
            before = await monitor_with_a_piece(a, p_source)
            # Monitoring and metadata go to the registry (the three pushes at once, as the timers of two servers).
            sent_a, sent_b, pushed = await asyncio.gather(
                run(a, "monitor", "--node-type", "source"), run(b, "monitor", "--node-type", "support"),
                run(a, "update-metadata"))  # fmt: skip
            assert "monitor: 1 source node(s) sent" in sent_a and "monitor: 1 support node(s) sent" in sent_b
            assert "update-metadata: sent 1 stream(s)" in pushed and "token=***" in pushed, pushed
            content_id, last_piece = before["infohash"], before["last_piece"]
            assert isinstance(last_piece, int)
            monitored = json.loads(admin("GET", f"{base}/api/controller/monitor").body)["nodes"]
            assert {(n["server"], n["port"], n["type"]) for n in monitored} == {
                (SERVER_A, p_source, "source"), (SERVER_B, p_b, "support")}
            assert {n["content_id"] for n in monitored} == {content_id}
            series = json.loads(admin("GET", f"{base}/api/controller/monitor/{SERVER_A}/{p_source}?seconds=600").body)
            assert len(series["t"]) == 1 and series["last_piece"][0] is not None
            stored = json.loads(admin("GET", f"{base}/api/controller/keys").body)["keys"]
            assert [k["name"] for k in stored] == ["ch1"] and "private_key" not in stored[0]

            sauth = (tmp_path / "a" / "tmp" / "metadata" / "ch1.sauth").read_bytes()
            forms = key_forms(sauth)
            logs_of_a = {str(p): p.read_bytes() for p in (tmp_path / "a").rglob("*.log*") if p.is_file()}

            # Server A is lost: its node killed, its directories gone.
            pid = int(next((tmp_path / "a" / "tmp" / "run").glob("*.pid")).read_text())
            os.kill(pid, signal.SIGKILL)
            shutil.rmtree(tmp_path / "a")

            # The operator moves the stream to D; D (an empty fleet root) restores it from the registry.
            assert admin("PUT", f"{lists}/source_node/{SERVER_D}", [entry]).status == 200
            assert admin("DELETE", f"{lists}/source_node/{SERVER_A}").status == 204
            assert not (tmp_path / "d" / "tmp").exists()
            out_d = await run(d, "start-sources", "--get-remote-metadata")
            assert f"restore: ch1: key written to {tmp_path}/d/tmp/metadata/ch1.sauth" in out_d, out_d
            assert f"up: source {p_source} (ch1)" in out_d, out_d
            assert (tmp_path / "d" / "tmp" / "metadata" / "ch1.sauth").read_bytes() == sauth
            restored = load_app_config(d)
            assert node_monitor(restored, p_source)["infohash"] == content_id, "same content id"

            def numbered_on() -> bool:  # its first piece may take a moment after it answers its monitor
                piece = node_monitor(restored, p_source)["last_piece"]
                return isinstance(piece, int) and piece > last_piece

            await wait_until(numbered_on, 30, "the restored source did not continue the piece numbers")
            restored_piece = node_monitor(restored, p_source)["last_piece"]
            assert isinstance(restored_piece, int)

            # The support node follows the stream to D (its list changed in the registry) and gets its pieces.
            assert admin("PUT", f"{lists}/support_node/{SERVER_B}/{p_b}",
                         {"source_ip": SERVER_D, "source_port": p_source, "extended_logging": 0}).status == 200
            out_b = await run(b, "start-support")
            assert f"restart: support {p_b} ({SERVER_D}:{p_source}, support_node[0]): command line changed" in out_b
            supported = load_app_config(b)

            def follows() -> bool:
                seen = node_monitor(supported, p_b)
                piece = seen["last_piece"]
                return seen["infohash"] == content_id and isinstance(piece, int) and piece > restored_piece

            await wait_until(follows, 60, "the support node did not get the restored source's new pieces")

            # The search can find the key: the authenticated answers hold it.
            handed = admin("GET", f"{base}/api/controller/keys/ch1")
            assert handed.status == 200 and leaks("authenticated key answer", handed.body, forms)
            with_meta = get(f"{ctl}/source_node?token={TOKEN}&get_metadata&server={SERVER_D}")
            assert leaks("authenticated get_metadata", with_meta.body, forms)

            # Unauthenticated (and wrongly authenticated) API answers.
            found: list[str] = []
            api = ["/api/streams", f"/api/streams/{content_id}", f"/api/streams/{content_id}/peers",
                   f"/api/streams/{content_id}/transport", "/api/nodes", "/api/series", "/metrics",
                   "/controller/source_node?get_metadata", "/controller/support_node", "/source_node/get_config.php"
                   "?get_metadata", "/controller/source_node?get_metadata&token=wrong-token-000",
                   "/api/controller/keys", "/api/controller/keys/ch1", "/api/controller/keys/ch1?token=nope",
                   "/api/controller/lists", f"/api/controller/lists/source_node/{SERVER_D}",
                   "/api/controller/monitor"]  # fmt: skip
            refused = 0
            for path in api:
                answer = get(base + path)
                refused += path.startswith(("/controller", "/api/controller", "/source_node")) and \
                    answer.status == 401  # fmt: skip
                found += leaks(f"GET {path} (HTTP {answer.status})", answer.body, forms)
            assert refused == 10, "every controller path refuses a request without the token"
            for path in ("/controller/metadata", "/controller/monitor", "/source_node/post_data.php"):
                answer = request("POST", base + path, body=b"{}")
                assert answer.status == 401
                found += leaks(f"POST {path}", answer.body, forms)
            nodes = json.loads(body).get("nodes", []) if (body := get(f"{base}/api/nodes").body).startswith(b"{") \
                else []  # fmt: skip
            # Every HTML page (the registry's pages, and whatever they link to).
            start = ["/", "/dashboard", f"/streams/{content_id}", "/streams/ch1", f"/watch/{content_id}",
                     "/watch/ch1", *(f"/nodes/{n['node_id']}" for n in nodes if isinstance(n, dict))]  # fmt: skip
            pages = html_pages(base, start)
            for url_, page in pages.items():
                found += leaks(f"page {url_}", page, forms)
        # Every log file (the fleet runs' outputs are checked by ``ok`` callers; the node and registry logs here).
        logs = {**logs_of_a, **{str(p): p.read_bytes() for p in tmp_path.rglob("*.log*") if p.is_file()}}
        assert str(tmp_path / "registry.log") in logs and len(logs) >= 5, sorted(logs)
        for name, data in logs.items():
            found += leaks(f"log {name}", data, forms)
        for i, output in enumerate(OUTPUTS):
            found += leaks(f"fleet run {i} output", output, forms)
        registry_log = logs[str(tmp_path / "registry.log")].decode()
        assert "controller: metadata stored for 1 stream(s): ch1" in registry_log
        assert "with the keys of ch1 handed to 127.0.0.5" in registry_log
        assert TOKEN not in registry_log
    # At rest: the database files (SQLite and its WAL) hold the key sealed only.
    for db_file in (tmp_path / "registry").glob("registry.sqlite3*"):
        found += leaks(f"database {db_file.name}", db_file.read_bytes(), forms)
    assert found == [], found


def test_a_wrong_or_exposed_key_file_stops_the_registry_in_one_line(tmp_path: Path) -> None:
    """Started with another key file than the one that sealed the stored keys, or with a key file others may read,
    ``swarmcast registry`` exits 2 with one line, before it listens."""
    state_dir = tmp_path / "registry"
    state_dir.mkdir()
    database = Database(sqlite_url(state_dir / "registry.sqlite3"))
    database.upgrade()
    box = prepare(RegistryState(db=database, token=TOKEN, settings=RegistrySettings(state_dir=state_dir))).box
    with database.engine.begin() as connection:
        controller_store.store_metadata(connection, box, {"ch1": (1, "-----BEGIN PRIVATE KEY-----\nX\n")}, 1.0)
    database.dispose()

    def start(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swarmcast", "registry", "--port", str(free_port()), "--bind",
                               HOST, "--state-dir", str(state_dir), "--token", TOKEN, *extra],
                              capture_output=True, text=True, env=env(), timeout=120, check=False)  # fmt: skip

    other = start("--key-file", str(tmp_path / "other.key"))
    assert other.returncode == 2, other.stderr
    errors = [line for line in other.stderr.splitlines() if "error:" in line]
    assert errors == [f"swarmcast registry: error: --key-file {tmp_path}/other.key: key id "
                      f"{errors[0].split('key id ')[1].split()[0]} did not seal the 1 stored stream key(s) (sealed by "
                      f"key id {box.key_id}): start with that key file"], other.stderr  # fmt: skip
    os.chmod(state_dir / "registry.key", 0o640)
    exposed = start()
    assert exposed.returncode == 2
    assert f"swarmcast registry: error: --key-file {state_dir}/registry.key: mode 0640 lets others read it" \
        in exposed.stderr  # fmt: skip
