"""A tiny run of bench/swarm.py with a start node and newcomers: their figures are there and sane."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("ss") is None, reason="the benchmark counts bytes with `ss` (iproute2)")
def test_startup_bench_smoke(tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "bench" / "swarm.py"), "--viewers", "2", "--late-viewers", "2",
            "--late-after", "2", "--late-interval", "1", "--support", "1", "--support-max-peers", "3",
            "--startup-nodes", "1", "--startup-handoff-bytes", "200000", "--bitrate", "500k", "--size", "320x180",
            "--fps", "15", "--duration", "16", "--ramp", "1", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=150, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    overall = result["overall"]
    assert overall["late_viewers"] == 2 and overall["startup_nodes"] == 1 and overall["support_max_peers"] == 3
    assert overall["late_players_started"] == 2  # the newcomers start: the start node had a place for each
    assert overall["late_startup_p50"] > 0 and overall["late_startup_p95"] >= overall["late_startup_p50"]
    assert isinstance(overall["startup_handed_off"], int) and overall["startup_handed_off"] >= 0
    late = [v for v in result["viewers"] if v["late"]]
    assert len(late) == 2 and all(v["error"] is None for v in late)
    assert overall["source_support_nodes"] == 2  # the start node holds the credential the source granted it
    assert "late viewers" in done.stdout and "start nodes, peers handed off" in done.stdout
