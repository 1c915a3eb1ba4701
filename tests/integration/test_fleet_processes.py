"""Process control with a stubborn engine: the failed-twice rule, SIGTERM then SIGKILL, and the run lock.

The engine here is a stand-in named ``acestreamengine`` (so the kernel calls its process that) that writes its pid
file, ignores SIGTERM and never answers its monitor: the worst node a fleet can meet.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from swarmcast.fleet.processes import alive, run_lock
from tests.integration.test_fleet_nodes import fleet, source_entry, write_root
from tests.procs import free_port

STUBBORN = """#!{python}
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
args = sys.argv
port, pid_dir = args[args.index("--port") + 1], args[args.index("--pid-file-dir") + 1]
os.makedirs(pid_dir, exist_ok=True)
with open(os.path.join(pid_dir, "acestreamengine-%s.pid" % port), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def pids(root: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in (root / "tmp" / "run").glob("*.pid")}


def test_stubborn_node_failed_twice_sigkill_and_lock(tmp_path: Path) -> None:
    root = tmp_path / "app"
    stub = tmp_path / "bin" / "acestreamengine"
    stub.parent.mkdir()
    stub.write_text(STUBBORN.format(python=sys.executable))
    stub.chmod(0o755)
    config = write_root(root, engine_path=str(stub))
    port = free_port()
    (root / "source.json").write_text(json.dumps([source_entry("s1", port, "http://127.0.0.1:1/none.ts")]))
    seen: list[int] = []
    try:
        first = fleet(config, "start-sources", "--start-timeout", "2", "--stop-timeout", "1")
        assert first.returncode == 1, first.stdout + first.stderr
        assert f"error: source {port} (s1): did not answer its monitor within 2 s" in first.stdout
        [pid1] = pids(root).values()
        seen.append(pid1)
        assert alive(pid1), "a node that failed once is left running"

        with run_lock(root / "tmp" / "state"):
            locked = fleet(config, "start-sources")
        assert locked.returncode == 3
        assert f"another fleet run (pid {os.getpid()}) holds" in locked.stderr
        assert pids(root) == {f"acestreamengine-{port}.pid": pid1}, "a locked-out run does nothing"

        second = fleet(config, "start-sources", "--start-timeout", "2", "--stop-timeout", "1")
        assert f"restart: source {port} (s1, source_node[0]): monitor:" in second.stdout, second.stdout
        assert "(2 runs in a row)" in second.stdout
        assert not alive(pid1), "SIGTERM ignored: SIGKILL after --stop-timeout"
        [pid2] = pids(root).values()
        seen.append(pid2)
        assert pid2 != pid1

        other = fleet(config, "stop", str(port + 1 if port < 65535 else port - 1))
        assert other.returncode == 1 and "stop: no node on port" in other.stdout
        assert alive(pid2)
        stop = fleet(config, "stop", str(port), "--stop-timeout", "1")
        assert f"stop: port {port}, pid {pid2}: killed (SIGKILL after 1 s)" in stop.stdout, stop.stdout
        assert pids(root) == {}
        assert not alive(pid2)
    finally:
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


FAKE_HLS = """#!{python}
import json, os, signal, sys, time
args = sys.argv
with open({log!r}, "a") as f:
    f.write(json.dumps(args[1:]) + "\\n")
if "--create-hls-transport" in args:
    if os.environ.get("FAIL_HLS"):
        sys.exit(1)
    for flag in ("--output-public", "--output-private"):
        with open(args[args.index(flag) + 1], "w") as f:
            f.write("transport")
    sys.exit(0)
port, pid_dir = args[args.index("--port") + 1], args[args.index("--pid-file-dir") + 1]
with open(os.path.join(pid_dir, "acestreamengine-%s.pid" % port), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def test_hls_stream_makes_its_transport_files_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestration of an HLS entry, with a stand-in engine (the real --create-hls-transport is issue 9's):
    transport files first (a failure starts nothing), then the node on the private file; made only once."""
    root = tmp_path / "app"
    calls = tmp_path / "calls.jsonl"
    stub = tmp_path / "bin" / "acestreamengine"
    stub.parent.mkdir()
    stub.write_text(FAKE_HLS.format(python=sys.executable, log=str(calls)))
    stub.chmod(0o755)
    config = write_root(root, engine_path=str(stub))
    port = free_port()
    (root / "source.json").write_text(json.dumps([source_entry("h1", port, "http://127.0.0.1:1/live.m3u8?x=1",
                                                               type="hls", extended_logging=0)]))  # fmt: skip
    try:
        monkeypatch.setenv("FAIL_HLS", "1")  # the fleet's environment, and so its engine's
        failed = fleet(config, "start-sources", "--start-timeout", "1")
        monkeypatch.delenv("FAIL_HLS")
        assert failed.returncode == 1
        assert f"error: source {port}: not started: --create-hls-transport exited with 1" in failed.stdout
        assert pids(root) == {}
        first = fleet(config, "start-sources", "--start-timeout", "1", "--stop-timeout", "1")
        words = [json.loads(line) for line in calls.read_text().splitlines()]
        assert [w[0] for w in words] == ["--create-hls-transport", "--create-hls-transport", "--log-file"], first
        private = str(root / "tmp" / "private" / "h1_private.acelive")
        assert words[2][words[2].index("--url") + 1] == private
        assert "--base-url" in words[1] and words[1][words[1].index("--base-url") + 1] == "http://127.0.0.1:1/live.m3u8"
        assert len(pids(root)) == 1
        # The stand-in never answers its monitor: each run finds it silent a second time (the first being the
        # start that never came up) and restarts it; the files, already there, are not made again.
        fleet(config, "start-sources", "--start-timeout", "1", "--stop-timeout", "1")
        fleet(config, "start-sources", "--start-timeout", "1", "--stop-timeout", "1")
        words = [json.loads(line) for line in calls.read_text().splitlines()]
        assert [w[0] for w in words].count("--create-hls-transport") == 2
        assert [w[0] for w in words].count("--log-file") == 3
    finally:
        monkeypatch.delenv("FAIL_HLS", raising=False)
        fleet(config, "stop", "all", "--stop-timeout", "1")


def test_a_restart_that_does_not_come_up_stops_the_other_restarts(tmp_path: Path) -> None:
    """A new command line that breaks nodes (here: every node is the stubborn stand-in) must not take every stream
    down in one run: after the first restart fails, the other changed nodes keep running until the next run."""
    root = tmp_path / "app"
    stub = tmp_path / "bin" / "acestreamengine"
    stub.parent.mkdir()
    stub.write_text(STUBBORN.format(python=sys.executable))
    stub.chmod(0o755)
    config = write_root(root, engine_path=str(stub))
    p1, p2 = free_port(), free_port()

    def entries(title: str) -> str:
        return json.dumps([source_entry(f"s{i}", p, "http://127.0.0.1:1/none.ts", title=title)
                           for i, p in enumerate((p1, p2))])  # fmt: skip

    (root / "source.json").write_text(entries("Old"))
    try:
        fleet(config, "start-sources", "--start-timeout", "1")
        before = pids(root)
        assert len(before) == 2
        (root / "source.json").write_text(entries("New"))
        out = fleet(config, "start-sources", "--start-timeout", "1", "--stop-timeout", "1").stdout
        first, second = sorted((p1, p2))  # restarts go in port order
        i = (p1, p2).index(first)
        assert f"restart: source {first} (s{i}, source_node[{i}]): command line changed (--title)" in out, out
        assert f"error: restart of {first} failed: not restarting {second} in this run" in out, out
        after = pids(root)
        assert after[f"acestreamengine-{second}.pid"] == before[f"acestreamengine-{second}.pid"]
        assert after[f"acestreamengine-{first}.pid"] != before[f"acestreamengine-{first}.pid"]
    finally:
        fleet(config, "stop", "all", "--stop-timeout", "1")
