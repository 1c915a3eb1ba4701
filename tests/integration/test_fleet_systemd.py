"""``fleet systemd --output DIR`` writes units that ``systemd-analyze verify`` accepts (Debian's systemd package;
no running systemd needed), and ``fleet exec`` (what the node template units run) becomes the configured node."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmcast.fleet.processes import alive
from tests.integration.test_fleet_nodes import engine_script, env, fleet, ok, source_entry, write_root
from tests.procs import free_port

UNITS = ["swarmcast-fleet.service", "swarmcast-fleet.timer", "swarmcast-broadcaster.service",
         "swarmcast-source@.service", "swarmcast-support@.service"]  # fmt: skip


def verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return subprocess.run([tool, "verify", *(str(directory / n) for n in names)], capture_output=True, text=True,
                          cwd=directory, timeout=120, check=False)  # fmt: skip


def test_generated_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    config = write_root(tmp_path / "app")
    out = ok(fleet(config, "systemd", "--output", str(tmp_path / "units")))
    units = tmp_path / "units"
    assert sorted(p.name for p in units.iterdir()) == sorted(UNITS), out
    service = (units / "swarmcast-fleet.service").read_text()
    assert f"fleet start-sources --config {config}" in service and "KillMode=process" in service
    assert "OnUnitInactiveSec=60s" in (units / "swarmcast-fleet.timer").read_text()
    names = ["swarmcast-fleet.service", "swarmcast-fleet.timer", "swarmcast-broadcaster.service",
             "swarmcast-source@8640.service", "swarmcast-support@8641.service"]  # fmt: skip
    result = verify(units, *names)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "swarmcast" not in result.stderr, result.stderr  # no warning about our units either

    # The check can fail: a missing executable fails verify; a malformed line is a warning naming the unit.
    broadcaster = units / "swarmcast-broadcaster.service"
    text = broadcaster.read_text()
    broadcaster.write_text(text.replace("ExecStart=/", "ExecStart=/nonexistent/", 1))
    assert verify(units, "swarmcast-broadcaster.service").returncode != 0
    (units / "swarmcast-fleet.service").write_text(service.replace("ExecStart=-/", "ExecStart=-", 1))
    assert "swarmcast-fleet.service" in verify(units, "swarmcast-fleet.service").stderr


def test_fleet_exec_becomes_the_configured_node(tmp_path: Path) -> None:
    root = tmp_path / "app"
    config = write_root(root)
    port = free_port()
    (root / "source.json").write_text(json.dumps([source_entry("s1", port, "http://127.0.0.1:1/none.ts",
                                                               extended_logging=0)]))  # fmt: skip
    dry = ok(fleet(config, "start-sources", "--dry-run"))
    line = next(x for x in dry.splitlines() if x.startswith("DRY-RUN:   command: "))
    process = subprocess.Popen([*fleet_argv(config), "exec", "source", str(port), "--config", str(config)],
                               env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        pid_file = root / "tmp" / "run" / f"acestreamengine-{port}.pid"
        while not pid_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), "the node never wrote its pid file"
        assert int(pid_file.read_text()) == process.pid, "exec keeps the pid systemd watches"
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        words = [w.decode() for w in cmdline if w]
        expected = shlex.split(line.partition("command: ")[2])
        # The console script runs as "python SCRIPT ARGS": the script is the engine path, then the same words.
        assert words[-len(expected):] == expected, (words, expected)
        assert expected[0] == engine_script()
        assert alive(process.pid)
    finally:
        process.terminate()
        process.wait(20)


def fleet_argv(config: Path) -> list[str]:
    del config
    return [sys.executable, "-m", "swarmcast", "fleet"]
