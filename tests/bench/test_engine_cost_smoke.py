"""A tiny run of bench/engine_cost.py: the figures are there and sane (never that they are small)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_cost_smoke(tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "bench" / "engine_cost.py"), "--engines", "2", "--bitrate", "500k",
            "--size", "320x180", "--fps", "15", "--ramp", "1", "--warmup", "3", "--duration", "4",
            "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["engines"]) == 2
    for engine in result["engines"]:
        assert engine["error"] is None
        assert engine["cpu_percent"] > 0
        assert engine["idle_rss"] > 0 and engine["peak_rss"] >= engine["rss"] > 0 and engine["uss"] > 0
        assert engine["rx_kBps"] > 0  # its player was fed during the window
    assert result["stream_share"] > 0 and "load_before" in result
