"""The garbage collector settings a node starts with (node/lifecycle.tune_gc), checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

from swarmcast.node.lifecycle import GC_YOUNG_THRESHOLD


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    code = ("import gc; from swarmcast.node import lifecycle; before = gc.get_threshold(); lifecycle.tune_gc(); "
            "print(gc.get_freeze_count(), *before, *gc.get_threshold())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    frozen, before, after = int(out[0]), [int(x) for x in out[1:4]], [int(x) for x in out[4:7]]
    assert frozen > 1000  # the imports' objects
    assert after == [GC_YOUNG_THRESHOLD, before[1], before[2]]  # older generations as CPython set them
