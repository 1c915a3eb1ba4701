"""Smoke test of the swarm simulator: a small swarm for a few virtual seconds yields sane figures."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from swarmcast import transport


def _load(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sim = _load("sim")


def test_sim_200_peers_few_seconds(tmp_path: Path) -> None:
    original = transport.PieceVerifier.verify
    # Churn high enough that newcomers come for sure: the run depends on set order (string hashing differs per
    # process), and at 0.2/min one process in a few dozen saw no join in the 4 s after the ramp.
    args = sim.parse(["--peers", "200", "--duration", "6", "--ramp", "2", "--churn", "2/min", "--progress", "0"])
    result = sim.simulate(args, 200)
    assert transport.PieceVerifier.verify is original  # the stand-in verifier does not leak out of the simulator
    assert result["pieces_emitted"] == 31  # one every 0.2 s, from t = 0 to t = 6 inclusive
    assert result["window_s"] == 4.0  # measured after the ramp
    assert 0.0 <= result["continuity"] <= 1.0
    for key in ("delay_p50_s", "delay_p95_s", "delay_max_s", "startup_p50_s"):
        assert result[key] is not None
        assert math.isfinite(result[key])
        assert result[key] >= 0
    assert result["delay_p50_s"] <= result["delay_p95_s"] <= result["delay_max_s"]
    assert result["source_upload_ratio"] > 0
    # The broadcaster pays for its support nodes' uplinks too: never less than the source's alone.
    assert result["broadcaster_upload_ratio"] >= result["source_upload_ratio"]
    assert 0.0 <= result["control_overhead"] < 1.0
    shares = result["share_from_engines"] + result["share_from_supports"] + result["share_from_source"]
    assert abs(shares - 1.0) < 1e-3
    assert result["engines_seen"] > 200  # churn brought newcomers
    assert "| 200 |" in sim.table([result])
    out = tmp_path / "sim-scaling.png"
    sim.plot([result, dict(result, peers=2000, duration_s=3.0)], out)  # a shorter big run is named on the plot
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_engines_without_upload_serve_nothing() -> None:
    # "--bandwidth 0:1": every viewer runs with upload_slots 0, so the bytes come from the broadcaster's nodes only.
    args = sim.parse(["--peers", "30", "--duration", "4", "--ramp", "1", "--bandwidth", "0:1", "--progress", "0"])
    result = sim.simulate(args, 30)
    assert result["share_from_engines"] == 0.0
    assert result["delay_p50_s"] is not None
    assert result["share_from_supports"] + result["share_from_source"] > 0.99


def test_sim_wall_limit_reports_what_ran() -> None:
    # A run out of wall time (a shared machine) still reports its figures, over the virtual time it got through.
    args = sim.parse(["--peers", "40", "--duration", "600", "--ramp", "1", "--wall-limit", "2", "--progress", "0"])
    result = sim.simulate(args, 40)
    assert result["stopped_early"] is True
    assert 0 < result["ended_at_s"] < 600
    assert result["window_s"] == round(result["ended_at_s"] - 1.0, 3)  # from the warmup (the ramp) to the stop
    # One piece every 0.2 virtual s from t = 0; the stop time is a multiple of the step, so 7.6 / 0.2 is 37.99…
    # in floating point: round before counting the piece emitted at the stop itself.
    assert result["pieces_emitted"] <= round(result["ended_at_s"] / 0.2) + 1
    assert "(to t = " in sim.table([result])


def test_sim_rss_limit_stops_with_the_figures_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    # A limit below what the interpreter itself takes: the first look, at the first step, ends the run.
    args = sim.parse(["--peers", "20", "--duration", "600", "--ramp", "1", "--rss-limit", "1", "--progress", "0"])
    result = sim.simulate(args, 20)
    assert result["stopped_early"] is True
    assert result["ended_at_s"] == 0.0 and result["pieces_emitted"] <= 1
    assert "--rss-limit 1 MB reached" in capsys.readouterr().err
    assert "rss_limit" not in result["params"]  # a bound on the run, not a parameter of what it measures


def test_sim_without_wall_limit_runs_to_its_duration() -> None:
    args = sim.parse(["--peers", "10", "--duration", "3", "--ramp", "1", "--progress", "0"])
    result = sim.simulate(args, 10)
    assert result["stopped_early"] is False
    assert result["ended_at_s"] == 3.0
    assert result["window_s"] == 2.0


def test_progress_line_shows_memory_and_gc_and_leaves_the_collector_as_it_was(
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import gc

    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert gc.isenabled()
    args = sim.parse(["--peers", "20", "--duration", "2", "--ramp", "1", "--progress", "1"])
    result = sim.simulate(args, 20)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[sim 20] t=")]
    assert len(lines) == 2  # t = 1 and t = 2
    assert all(" rss=" in line and " MB" in line and " gc=" in line for line in lines)
    assert float(lines[-1].split(" rss=")[1].split()[0]) > 10  # MB resident: an interpreter and a swarm at least
    assert result["gc_s"] >= 0 and result["gc_collections"] >= 0
    # The run's settings (frozen start-up objects, automatic collection off, the timing callback) end with it.
    assert gc.isenabled() and gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == frozen
    assert not any(isinstance(callback, sim.GcClock) for callback in gc.callbacks)


def test_a_run_in_a_process_that_froze_objects_leaves_the_count_as_it_was() -> None:
    # As in a test worker where a node's tune_gc ran first: the run must neither thaw those nor add its own.
    import gc

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        sim.simulate(sim.parse(["--peers", "10", "--duration", "1", "--ramp", "0.5", "--progress", "0"]), 10)
        # Not equal: a frozen object that the run lets go of (a cache entry, say) leaves the count when it is freed.
        # The faults are a freeze of its own (the count grows by the run's objects) or a thaw (it falls to 0).
        after = gc.get_freeze_count()
        assert frozen * 0.9 <= after <= frozen, (frozen, after)
    finally:
        gc.unfreeze()
