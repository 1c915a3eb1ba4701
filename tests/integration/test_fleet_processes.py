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

        stop = fleet(config, "stop", "all", "--stop-timeout", "1")
        assert f"stop: port {port}, pid {pid2}: killed (SIGKILL after 1 s)" in stop.stdout, stop.stdout
        assert pids(root) == {}
        assert not alive(pid2)
    finally:
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
