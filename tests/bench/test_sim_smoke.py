"""Smoke test of the swarm simulator: a small swarm for a few virtual seconds yields sane figures."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

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


def test_sim_200_peers_few_seconds() -> None:
    original = transport.PieceVerifier.verify
    args = sim.parse(["--peers", "200", "--duration", "6", "--ramp", "2", "--churn", "0.2/min"])
    result = sim.simulate(args, 200)
    assert transport.PieceVerifier.verify is original  # the stand-in verifier does not leak out of the simulator
    assert result["pieces_emitted"] > 0
    assert 0.0 <= result["continuity"] <= 1.0
    for key in ("delay_p50_s", "delay_p95_s", "delay_max_s", "startup_p50_s"):
        assert result[key] is not None
        assert math.isfinite(result[key])
        assert result[key] >= 0
    assert result["source_upload_ratio"] > 0
    assert 0.0 <= result["control_overhead"] < 1.0
    shares = result["share_from_engines"] + result["share_from_supports"] + result["share_from_source"]
    assert abs(shares - 1.0) < 1e-3
