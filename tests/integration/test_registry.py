"""The real ``swarmcast registry`` process, on SQLite and on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from swarmcast.registry.db import Database
from swarmcast.registry.state import DEFAULT_PORT
from tests.procs import LOOPBACK, free_port, swarmcast_process
from tests.registry_helpers import TOKEN, node_body, stream_body, transport_file

START_TIMEOUT = 90.0  # seconds a registry may take to listen on a loaded machine (8 helpers on 2 cores)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def call(base: str, method: str, path: str, body: object = None, *, token: bool = True) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers=AUTH if token else {})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, (json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw)


def test_registry_process_lists_nodes_marks_them_gone_and_keeps_its_data(
    registry_db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    args = ["registry", "--port", str(port), "--bind", LOOPBACK, "--db", registry_db_url, "--token", TOKEN,
            "--state-dir", str(tmp_path / "state"), "--heartbeat-timeout", "2"]  # fmt: skip
    cid, data = transport_file()
    with swarmcast_process(args, stderr_path=tmp_path / "registry.log", wait_port=(LOOPBACK, port),
                           start_timeout=START_TIMEOUT) as registry:  # fmt: skip
        status, answer = call(base, "POST", "/api/nodes", node_body("source", "127.0.0.1:7000", [cid]))
        assert status == 201, answer
        source = answer["node_id"]
        assert call(base, "POST", "/api/streams", stream_body(cid, data, node_id=source))[0] == 201
        status, answer = call(base, "POST", "/api/nodes", node_body("support", "127.0.0.2:7001", [cid]))
        support = answer["node_id"]
        assert call(base, "POST", "/api/nodes", node_body(), token=False)[0] == 401

        # The source keeps beating, the support node falls silent: gone within the timeout (and a sweep).
        deadline = time.monotonic() + 20
        state = "live"
        while time.monotonic() < deadline and state != "gone":
            assert call(base, "POST", f"/api/nodes/{source}/heartbeat", {"figures": {"upload_bps": 1000}})[0] == 200
            time.sleep(1.0)
            state = call(base, "GET", f"/api/nodes/{support}")[1]["state"]
        assert state == "gone", registry.stderr_tail()
        [stream] = call(base, "GET", "/api/streams")[1]["streams"]
        assert stream["live"] is True
        assert stream["nodes"]["support"] == 0
        assert call(base, "DELETE", f"/api/nodes/{source}")[0] == 204
        assert call(base, "GET", "/api/streams/news")[1]["live"] is False

        status, metrics = call(base, "GET", "/metrics")
        assert status == 200
        assert b'swarmcast_registry_nodes{role="support",state="gone"} 1.0' in metrics
        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True,
                                     timeout=30, check=False)  # fmt: skip
            assert checked.returncode == 0, checked.stdout + checked.stderr
        assert registry.stop() == 0
        assert TOKEN not in registry.stderr_tail()

    # Restarted on the same database: the stream and nodes are still there.
    with swarmcast_process(args, stderr_path=tmp_path / "again.log", wait_port=(LOOPBACK, port),
                           start_timeout=START_TIMEOUT) as registry:  # fmt: skip
        assert call(base, "GET", f"/api/streams/{cid}/transport")[1] == data
        assert call(base, "GET", f"/api/nodes/{source}")[1]["state"] == "left"
        assert registry.stop() == 0


def test_a_newer_database_is_refused_in_one_line(registry_db_url: str, tmp_path: Path) -> None:
    database = Database(registry_db_url)
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    database.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "swarmcast.cli", "registry", "--port", str(free_port()), "--db", registry_db_url,
         "--token", TOKEN, "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("swarmcast registry: error: the database ")
    assert "schema revision 9999, newer than this swarmcast knows" in line


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_swarmcast_registry_with_no_arguments_starts_on_sqlite(tmp_path: Path) -> None:
    if not _port_free(DEFAULT_PORT):
        pytest.skip(f"port {DEFAULT_PORT} (the default) is taken on this machine")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    env.pop("SWARMCAST_REGISTRY_TOKEN", None)
    with swarmcast_process(["registry"], env=env, stderr_path=tmp_path / "registry.log",
                           wait_port=(LOOPBACK, DEFAULT_PORT), start_timeout=START_TIMEOUT) as registry:  # fmt: skip
        base = f"http://{LOOPBACK}:{DEFAULT_PORT}"
        assert call(base, "GET", "/api/streams") == (200, {"streams": []})
        state_dir = tmp_path / "xdg" / "swarmcast" / "registry"
        token = (state_dir / "registry.token").read_text().strip()
        for name in ("registry.sqlite3", "registry.token"):
            assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        registry.signal(signal.SIGTERM)
        assert registry.popen.wait(15) == 0
        log = registry.stderr_tail()
        assert "sqlite" in log
        assert str(state_dir / "registry.token") in log
        assert token not in log
