"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator

import pytest

from tests.opentracker import OpenTracker, find_opentracker, opentracker

OpenTrackerFactory = Callable[[Iterable[bytes]], OpenTracker]


@pytest.fixture
def opentracker_factory() -> Iterator[OpenTrackerFactory]:
    """Start real opentrackers (whitelisting the given info_hashes); all are stopped at teardown, pass or fail.

    Skips when opentracker is not installed, except under CI=true where a missing tracker is a broken setup.
    """
    if find_opentracker() is None:
        message = "opentracker is not installed (apt-get install opentracker)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with contextlib.ExitStack() as stack:

        def start(info_hashes: Iterable[bytes] = ()) -> OpenTracker:
            return stack.enter_context(opentracker(info_hashes))

        yield start
