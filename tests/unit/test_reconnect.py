"""The input's reconnect policy: a fixed interval, however long the outage (issue 7: the doubling backoff turned a
15 s outage into a 31 s stall)."""

from __future__ import annotations

import pytest

from swarmcast.ingest.reconnect import LOG_EVERY, ReconnectPolicy


def test_delay_never_grows_past_the_interval() -> None:
    policy = ReconnectPolicy(1.5)
    delays = [policy.failed(now=float(t)) for t in range(100)]
    assert max(delays) <= 1.5
    assert policy.attempts == 100
    assert policy.outage(now=99.0) == 99.0


def test_connected_resets_the_outage() -> None:
    policy = ReconnectPolicy(1.0)
    policy.failed(now=0.0)
    policy.failed(now=1.0)
    policy.connected()
    assert policy.outage(now=5.0) == 0.0
    assert policy.attempts == 0


def test_logs_first_failure_then_a_summary_every_period() -> None:
    policy = ReconnectPolicy(1.0)
    logged = []
    for t in range(int(LOG_EVERY * 2) + 1):
        policy.failed(now=float(t))
        if policy.should_log(now=float(t)):
            logged.append(t)
    assert logged == [0, int(LOG_EVERY), int(2 * LOG_EVERY)]


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReconnectPolicy(0.0)
