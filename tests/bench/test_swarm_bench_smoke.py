"""A tiny run of bench/swarm.py: the figures are there and sane (never that they are fast)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("ss") is None, reason="the benchmark counts bytes with `ss` (iproute2)")
def test_swarm_bench_smoke(tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "bench" / "swarm.py"), "--viewers", "2", "--support", "1",
            "--bitrate", "500k", "--size", "320x180", "--fps", "15", "--duration", "6", "--ramp", "1",
            "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    overall = result["overall"]
    assert overall["players_started"] == 2
    for viewer in result["viewers"]:
        assert viewer["error"] is None
        assert viewer["startup_s"] is not None and viewer["startup_s"] > 0
        assert viewer["delay_p50"] is not None and math.isfinite(viewer["delay_max"]) and viewer["delay_max"] < 60
        assert 0 <= viewer["continuity_rel"] <= 1 and 0 <= viewer["continuity_abs"] <= 1
    assert overall["source_upload_ratio"] > 0
    assert overall["source_support_nodes"] == 1  # the support node holds the credential the source granted it
    assert 0 <= overall["peer_share"] <= 1
    assert (tmp_path / "overview.png").stat().st_size > 0


@pytest.mark.skipif(shutil.which("ss") is None, reason="the benchmark counts bytes with `ss` (iproute2)")
def test_swarm_bench_hls_player_smoke(tmp_path: Path) -> None:
    """``--player hls``: the players read the engines' /ace/manifest.m3u8 and the delay is measured from the clock
    packets the segments carry."""
    args = [sys.executable, str(ROOT / "bench" / "swarm.py"), "--viewers", "2", "--support", "1", "--player", "hls",
            "--bitrate", "500k", "--size", "320x180", "--fps", "15", "--duration", "8", "--ramp", "1",
            "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["overall"]["player"] == "hls"
    assert result["overall"]["players_started"] == 2
    for viewer in result["viewers"]:
        assert viewer["error"] is None
        assert viewer["player"] == "hls" and viewer["hls_segments"] >= 3
        assert viewer["delay_p50"] is not None and math.isfinite(viewer["delay_max"]) and viewer["delay_max"] < 60
