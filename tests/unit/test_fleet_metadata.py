"""Metadata off the server and back: restore rules, what update-metadata sends, and the receiver's store."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from swarmcast.fleet.commandline import NodeSpec, source_specs
from swarmcast.fleet.config import AppConfig, check_sources
from swarmcast.fleet.push import collect_metadata, restore_metadata
from swarmcast.fleet.receiver import Store
from tests.unit.test_fleet_config import SOURCE_EXAMPLE, app_config

KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
       "-----END PRIVATE KEY-----\n")


def spec_with(tmp: Path, last_seq: int, key: str = KEY) -> tuple[AppConfig, NodeSpec]:
    app = app_config(tmp)
    entry = {**SOURCE_EXAMPLE[0], "type": "ts", "metadata": {"last_seq": last_seq, "private_key": key}}
    entries, _ = check_sources([entry], app)
    return app, source_specs(app, entries, memory=1)[0]


def test_restore_writes_key_0600_and_never_goes_back(tmp_path: Path) -> None:
    said: list[str] = []
    app, spec = spec_with(tmp_path, 5000)
    restore_metadata(app, spec, said.append)
    key_path = app.dir("metadata") / "brodilo.sauth"
    assert key_path.read_text() == KEY
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert (app.dir("metadata") / "brodilo.restart").read_text().strip() == "5000"
    assert all("PRIVATE KEY" not in line and "MC4C" not in line for line in said)
    # The server's own .restart is ahead of the controller's copy: kept.
    (app.dir("metadata") / "brodilo.restart").write_text("9000\n")
    app, spec = spec_with(tmp_path, 5000)
    restore_metadata(app, spec, said.append)
    assert (app.dir("metadata") / "brodilo.restart").read_text().strip() == "9000"


def test_restore_refuses_a_different_key(tmp_path: Path) -> None:
    app, spec = spec_with(tmp_path, 10)
    restore_metadata(app, spec, lambda _: None)
    app, other = spec_with(tmp_path, 10, key=KEY.replace("AAAA", "BBBB", 1))
    with pytest.raises(ValueError, match="metadata mismatch") as error:
        restore_metadata(app, other, lambda _: None)
    assert "BBBB" not in str(error.value) and "AAAA" not in str(error.value)
    assert (app.dir("metadata") / "brodilo.sauth").read_text() == KEY


def test_collect_skips_incomplete_streams(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    meta = app.dir("metadata")
    meta.mkdir(parents=True)
    (meta / "a.sauth").write_text(KEY)
    (meta / "a.restart").write_text("1000\n")
    (meta / "b.sauth").write_text(KEY)
    (meta / "a.acelive").write_bytes(b"d")
    found, warnings = collect_metadata(app)
    assert found == {"a": {"last_seq": 1000, "private_key": KEY}}
    assert warnings == [f"b: no last_seq in {meta}: not sent"]


def test_receiver_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "r")
    assert store.put_metadata({"a": {"last_seq": 2000, "private_key": KEY}})[0] == 200
    path = tmp_path / "r" / "metadata" / "a.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "r" / "metadata").stat().st_mode) == 0o700
    assert store.put_metadata({"a": {"last_seq": 1000, "private_key": KEY}})[0] == 200
    assert json.loads(path.read_text())["last_seq"] == 2000  # numbers never go back
    status, answer = store.put_metadata({"a": {"last_seq": 3000, "private_key": "other"}})
    assert status == 409 and "different key" in str(answer["error"])
    assert store.put_metadata({"../x": {"last_seq": 1, "private_key": KEY}})[0] == 400
    assert store.put_metadata({"a": {"last_seq": "1", "private_key": KEY}})[0] == 400
    assert store.put_monitor({"port": 8640, "type": "source", "peers": 1}, "127.0.0.2")[0] == 200
    assert json.loads((tmp_path / "r" / "monitor" / "127.0.0.2_8640.json").read_text())["peers"] == 1
    assert store.put_monitor({"type": "source"}, "127.0.0.2")[0] == 400
