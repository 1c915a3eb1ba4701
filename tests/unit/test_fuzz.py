"""Every parser that sees network or file input, fuzzed: only the parser's own error may come out.

The targets, seeds and mutator are shared with ``bench/fuzz.py`` (tests/fuzz/targets.py); here hypothesis draws
a few hundred inputs per target, long runs are documented in docs/fuzzing.md.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import Target, all_targets, mutate

TARGETS = all_targets()
NAMES = sorted(TARGETS)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def run(target: Target, data: bytes) -> None:
    with contextlib.suppress(*target.errors):
        target.run(data)


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_valid_or_refused_cleanly(name: str) -> None:
    target = TARGETS[name]
    assert target.seeds
    for seed in target.seeds:
        run(target, seed)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(rng_seed=st.integers(min_value=0, max_value=2**32), pick=st.integers(min_value=0, max_value=1000))
def test_mutated_seeds(name: str, rng_seed: int, pick: int) -> None:
    target = TARGETS[name]
    rng = random.Random(rng_seed)
    seeds = target.seeds
    run(target, mutate(rng, seeds[pick % len(seeds)], seeds[(pick // 7) % len(seeds)]))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    run(TARGETS[name], data)


def test_mutator_makes_the_hostile_shapes() -> None:
    rng = random.Random(3)
    seed = TARGETS["bencode"].seeds[0]
    made = [mutate(rng, seed, b"d1:ai1ee") for _ in range(3000)]
    assert any(len(m) < len(seed) for m in made)  # truncation, deletes
    assert any(len(m) > len(seed) + 10_000 for m in made)  # deep nesting, repeats
    assert any(b"l" * 100 in m for m in made)
    assert any(b"18446744073709551616" in m or b"9" * 25 in m for m in made)  # huge length fields
    assert len(set(made)) > 2500
