"""The simulator's engine options: runs depend on their seed only, and the mypyc build compiles the real sources.

The compiled run itself is not built here (mypyc and gcc take minutes on this machine); docs/benchmarks.md
("Simulator speed") gives the interpreted and compiled figures of the same seed side by side, identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import sim_build

ROOT = Path(__file__).resolve().parents[2]
SIM_ARGS = ["--peers", "25", "--duration", "4", "--ramp", "1", "--churn", "2/min", "--progress", "0"]
# What may differ between two runs of the same seed: how long they took, and what ran them.
UNSTABLE = {"wall_s", "cpu_s", "rss_mb", "code", "engine"}


def _run_sims(*seeds: int) -> list[dict[str, object]]:
    """One simulator process per seed, side by side (each a few seconds of CPU)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT / "src"))
    env.pop(sim_build.ENV, None)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "sim.py"), *SIM_ARGS, "--seed", str(seed)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for seed in seeds]  # fmt: skip
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=150)
            assert proc.returncode == 0
            result = json.loads(out.splitlines()[0])
            assert isinstance(result, dict)
            results.append({k: v for k, v in result.items() if k not in UNSTABLE})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_same_seed_same_figures_different_seed_different_figures() -> None:
    # The swarm keeps sessions in sets: hashed by address, their order (and so the order of writes on an uplink)
    # changed from run to run. Hashed by session number and with the key drawn from the seed, a run repeats exactly:
    # what lets a compiled run be checked against an interpreted one.
    first, again, other = _run_sims(1, 1, 2)
    assert first == again
    assert first != other


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "swarmcast", tmp_path / "swarmcast")
    return tmp_path


def test_peer_session_patch_applies_to_the_current_source(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    assert sim_build.patch_peer(root)
    text = (root / "swarmcast" / "swarm" / "peer.py").read_text()
    assert "def __hash__(self) -> int:" in text
    assert "return bool(int(self.handshake.flags) & 1)" in text
    compiled = sim_build.compiled_modules(root, peer_patched=True)
    assert "swarmcast/swarm/peer.py" in compiled
    assert "swarmcast/swarm/core.py" in compiled
    assert "swarmcast/wire/connection.py" in compiled
    assert not [m for m in compiled if not m.startswith(("swarmcast/swarm/", "swarmcast/wire/"))]


def test_changed_peer_session_is_left_interpreted(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    path = root / "swarmcast" / "swarm" / "peer.py"
    path.write_text(path.read_text().replace("verified.role is CredentialRole.SOURCE", "verified.role == 1"))
    before = path.read_text()
    assert not sim_build.patch_peer(root)
    assert path.read_text() == before  # no half-applied patch
    assert "swarmcast/swarm/peer.py" not in sim_build.compiled_modules(root, peer_patched=False)


def test_build_key_follows_every_source_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "swarmcast", src / "swarmcast")
    before = sim_build.source_hash(src)
    assert sim_build.source_hash(src) == before
    (src / "swarmcast" / "swarm" / "core.py").write_text((src / "swarmcast" / "swarm" / "core.py").read_text() + "\n")
    assert sim_build.source_hash(src) != before


def test_missing_compiler_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(sim_build.BuildError, match="C compiler"):
        sim_build.build(root=tmp_path)
