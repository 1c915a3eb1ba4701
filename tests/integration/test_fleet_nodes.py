"""``swarmcast fleet`` with real nodes: streaming-utils' own template and examples start nodes that play, and one
reconcile run starts, stops and restarts exactly what the config changed.

The engine is the installed ``acestreamengine`` console script (the one next to this interpreter, else on PATH);
it imports swarmcast from this checkout through PYTHONPATH. Only TS streams run here: HLS command lines are
checked in tests/unit/test_fleet_commandline.py (``--create-hls-transport`` is built in parallel).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

import swarmcast
from swarmcast.fleet import jsonc
from swarmcast.fleet.config import load_app_config
from swarmcast.fleet.controller import node_monitor
from swarmcast.fleet.processes import alive
from tests.integration.chain import HOST, decode_video, engine, read_stream
from tests.procs import free_port, swarmcast_process
from tests.unit.test_fleet_config import TEMPLATE

SIGNAL = ("--bitrate", "200k", "--size", "160x96", "--fps", "25")
BITRATE = "25000"  # bytes/s: the 200 kbit/s test signal


def engine_script() -> str:
    found = shutil.which("acestreamengine", path=str(Path(sys.executable).parent)) or shutil.which("acestreamengine")
    if found is None:
        pytest.skip("no acestreamengine console script installed (pip install -e .)")
    return found


def env() -> dict[str, str]:
    src = str(Path(swarmcast.__file__).parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


@contextlib.contextmanager
def signal_url(tmp: Path) -> Iterator[str]:
    port = free_port()
    with swarmcast_process(["testsrc", "--port", str(port), *SIGNAL], stderr_path=tmp / f"testsrc-{port}.log",
                           wait_port=(HOST, port)):  # fmt: skip
        yield f"http://{HOST}:{port}/stream.ts"


def write_root(root: Path, *, source_node: str = "source.json", support_node: str = "support.json",
               bind: str | None = None, monitor: str | None = None, metadata: str | None = None,
               token: str | None = None, engine_path: str | None = None,
               tracker: str | None = None) -> Path:  # fmt: skip
    """streaming-utils' template, comments kept, with this test's paths (and trackers that go nowhere)."""
    tracker = tracker or f"{HOST}:{free_port()}"
    text = (TEMPLATE.replace("/opt/acestream-stable/start-engine", engine_path or engine_script())
            .replace('"/opt/app"', json.dumps(str(root)))
            .replace('"http://example.com/source_node/get_config.php"', json.dumps(source_node))
            .replace('"http://example.com/support_node/get_config.php"', json.dumps(support_node))
            .replace("tracker1.example.com:2710", tracker).replace("tracker2.example.com:2710", tracker))  # fmt: skip
    if monitor:
        text = text.replace('"http://example.com/monitor/data_receiver.php"', json.dumps(monitor))
    if metadata:
        text = text.replace('"http://example.com/source_node/post_data.php"', json.dumps(metadata))
    if bind:
        text = text.replace('"root":', f'"bind": "{bind}",\n    "root":')
    if token:
        text = text.replace('//,"node_access_token": "<access_token>"', f',"node_access_token": "{token}"')
    jsonc.loads(text)  # still the template's shape
    path = root / "config" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def source_entry(uid: str, port: int, url: str, **changes: object) -> dict[str, object]:
    """streaming-utils' examples/source_node_config.json entry, as a TS stream of the test signal."""
    entry: dict[str, object] = {
        "stream_uid": uid, "port": port, "title": "Brodilo Channel", "url": url, "bitrate": BITRATE,
        "categories": ["entertaining"], "quality": "HD", "type": "ts", "upload_to": [],
        "force_monotonic_sequence": 1, "extended_logging": 1, "engine_version": "stable",
    }  # fmt: skip
    entry.update(changes)
    return entry


def fleet(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmcast", "fleet", args[0], "--config", str(config), *args[1:]],
                          capture_output=True, text=True, env=env(), timeout=timeout, check=False)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def status(config: Path) -> dict[int, dict[str, object]]:
    """``status --json`` by port; its exit code says whether every node is up, and is checked against that."""
    result = fleet(config, "status", "--json")
    rows = {int(r["port"]): r for r in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == (0 if all(r["state"] == "up" for r in rows.values()) else 1), result.stderr
    return rows


async def monitor_with_a_piece(config: Path, port: int, timeout: float = 30.0) -> dict[str, object]:
    """The node's monitor once it shows a piece. The monitor is a snapshot refreshed every stats_report_interval
    (4 s): a source that started a moment ago may still show the one taken before its first piece."""
    deadline = time.monotonic() + timeout
    while True:
        monitored = node_monitor(load_app_config(config), port)
        if isinstance(monitored["last_piece"], int) or time.monotonic() > deadline:
            return monitored
        await asyncio.sleep(0.5)


@contextlib.contextmanager
def stopped_at_end(*configs: Path) -> Iterator[None]:
    """Whatever happens, every node these fleets started is stopped (SIGTERM, SIGKILL) before the test ends."""
    try:
        yield
    finally:
        for config in configs:
            if config.exists():
                fleet(config, "stop", "all", "--stop-timeout", "3")


async def test_template_and_examples_start_play_and_reconcile(tmp_path: Path) -> None:
    root = tmp_path / "app"
    config = write_root(root)
    p_source, p_gone, p_added, p_support = (free_port() for _ in range(4))
    with signal_url(tmp_path) as url, stopped_at_end(config):
        (root / "source.json").write_text(json.dumps([
            source_entry("brodilo", p_source, url, upload_to=[f"127.0.0.1:{p_support}"]),
            source_entry("gone", p_gone, url, title="Gone", extended_logging=0),
        ], indent=4))  # fmt: skip
        # examples/support_node_config.json, on this test's ports
        (root / "support.json").write_text(json.dumps([{
            "port": p_support, "source_ip": "127.0.0.1", "source_port": p_source, "extended_logging": 1,
            "engine_version": "stable"}], indent=4))  # fmt: skip

        dry = ok(fleet(config, "start-sources", "--dry-run"))
        assert f"DRY-RUN:   command: {engine_script()} --log-file {root}/tmp/logs/source_node_{p_source}.log" in dry
        assert not (root / "tmp" / "run").exists(), "a dry run starts nothing"
        out = ok(fleet(config, "start-sources"))
        assert f"up: source {p_source} (brodilo)" in out and f"up: source {p_gone} (gone)" in out, out
        out = ok(fleet(config, "start-support"))
        assert f"up: support {p_support} (127.0.0.1:{p_source})" in out, out
        before = status(config)
        assert {p: r["state"] for p, r in before.items()} == {p_source: "up", p_gone: "up", p_support: "up"}
        assert sorted(p.name for p in (root / "tmp" / "run").iterdir()) == sorted(
            f"acestreamengine-{p}.pid" for p in (p_source, p_gone, p_support))  # fmt: skip

        # A player through the support node decodes video.
        with engine(tmp_path) as api:
            transport = f"http://{HOST}:{p_support}/app/get_transport_file?format=raw"
            data = await read_stream(f"{api}/ace/getstream?url={urllib.parse.quote(transport, safe='')}", 3.0)
        frames = decode_video(data)
        assert len(frames) >= 10, f"{len(frames)} frames from {len(data)} bytes"

        # Nothing to do: nothing happens.
        out = ok(fleet(config, "start-sources"))
        assert "start:" not in out and "restart:" not in out and "stop:" not in out, out

        # Add a stream, remove one, change a title: one run starts, stops and restarts exactly those.
        (root / "source.json").write_text(json.dumps([
            source_entry("brodilo", p_source, url, title="Brodilo TV", upload_to=[f"127.0.0.1:{p_support}"]),
            source_entry("added", p_added, url, title="Added", extended_logging=0),
        ], indent=4))  # fmt: skip
        out = ok(fleet(config, "start-sources"))
        lines = [line for line in out.splitlines() if line.split(":")[0] in ("start", "stop", "restart")]
        assert lines == [
            f"stop: source {p_gone} (gone): no longer in the config: stopped (SIGTERM)",
            f"start: source {p_added} (added, source_node[1]): not running",
            f"restart: source {p_source} (brodilo, source_node[0]): command line changed (--title)",
        ], out
        after = status(config)
        assert {p: r["state"] for p, r in after.items()} == {p_source: "up", p_added: "up", p_support: "up"}
        assert after[p_source]["pid"] != before[p_source]["pid"]
        assert after[p_support]["pid"] == before[p_support]["pid"], "a source run leaves support nodes alone"
        gone_pid = before[p_gone]["pid"]
        assert isinstance(gone_pid, int) and not alive(gone_pid)
        title = json.loads((root / "tmp" / "state" / "fleet-nodes" / f"{p_source}.json").read_text())["argv"]
        assert "Brodilo TV" in title

        out = ok(fleet(config, "stop", "all"))
        assert out.count("stopped (SIGTERM)") == 3, out
        assert list((root / "tmp" / "run").iterdir()) == []
        assert {p: r["state"] for p, r in status(config).items()} == dict.fromkeys((p_source, p_added, p_support),
                                                                                  "not started")  # fmt: skip
        for row in after.values():
            assert isinstance(row["pid"], int) and not alive(row["pid"])
