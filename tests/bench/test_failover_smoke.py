"""Smoke test of bench/failover.py: the standby scenario, short (kill -9 of the primary, takeover, figures out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.failover import standby


async def test_failover_standby_scenario_reports_a_takeover(tmp_path: Path) -> None:
    args = argparse.Namespace(reconnect_interval=0.5, takeover_after=1.0, warmup=2.0, after=4.0, bitrate="1M")
    result = await standby(tmp_path, args)
    assert result["error"] is None
    assert result["content_id_primary"] == result["content_id_standby"]
    assert result["takeover_s"] is not None
    assert result["support_holds_contiguous"]
    assert result["standby_first_piece_random_access"]
