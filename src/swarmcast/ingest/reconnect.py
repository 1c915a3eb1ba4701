"""When to try the input again after it failed, sans-IO.

The Ace Stream engine's ``--source-reconnect-interval`` is a fixed interval, and so is ours: a live input that went
away (encoder restart, head-end failover, network blip) is wanted back as soon as it is there again, and every
second of waiting after it returned is a second every player stalls. The old doubling backoff (capped at 30 s)
turned a 15 s outage into a 31 s stall. Trying a dead input once a second costs one refused TCP connection a
second, which nobody notices; what would be noticed is the log, so failures are reported once, then summarised
every ``LOG_EVERY`` seconds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from swarmcast.ingest.status import InputStatus

log = logging.getLogger("swarmcast.ingest")

LOG_EVERY = 30.0  # seconds between "input still down" lines during a long outage


@dataclass
class ReconnectPolicy:
    interval: float  # seconds between attempts; never more
    down_since: float | None = None
    attempts: int = 0
    _last_log: float | None = None

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("the reconnect interval must be positive")

    def failed(self, now: float) -> float:
        """An attempt failed (or the stream ended) at ``now``: the delay before the next attempt."""
        if self.down_since is None:
            self.down_since = now
        self.attempts += 1
        return self.interval

    def connected(self) -> None:
        self.down_since = None
        self.attempts = 0
        self._last_log = None

    def should_log(self, now: float) -> bool:
        """True for the first failure of an outage, then once every LOG_EVERY seconds."""
        if self._last_log is None or now - self._last_log >= LOG_EVERY:
            self._last_log = now
            return True
        return False

    def outage(self, now: float) -> float:
        return 0.0 if self.down_since is None else now - self.down_since


def note_connected(policy: ReconnectPolicy, status: InputStatus, logged_kinds: set[str], *, url: str, what: str,
                   reconnected: bool, on_reconnect: Callable[[], None] | None) -> None:  # fmt: skip
    """The input answered: one log line (naming the outage it ends), the policy and status reset, a reconnect counted
    and announced (the cutter then marks a discontinuity). Shared by every reader of the source's input."""
    if policy.down_since is not None:
        log.info("source input back after %.1f s (%d failed attempts): %s",
                 policy.outage(time.monotonic()), policy.attempts, url)  # fmt: skip
    else:
        log.info("source input connected (%s): %s", what, url)
    policy.connected()
    logged_kinds.clear()
    status.connected, status.attempts = True, 0
    if reconnected:
        status.reconnects += 1
        if on_reconnect is not None:
            on_reconnect()


MAX_LOGGED_KINDS = 8  # kinds of failure logged at once per outage; the rest wait for the LOG_EVERY summary


def note_failed(policy: ReconnectPolicy, status: InputStatus, logged_kinds: set[str], *, url: str,
                reason: str) -> float:  # fmt: skip
    """An attempt failed: the status updated, a log line when due; returns the seconds to wait before the next.

    Each new kind of failure (digits aside) is logged at once, a few per outage; repeats wait for the summary."""
    now = time.monotonic()
    delay = policy.failed(now)
    status.connected, status.attempts = False, policy.attempts
    status.last_error, status.last_error_at = reason, time.time()
    kind = re.sub(r"\d+", "N", reason)
    # should_log first: it also restarts the summary period.
    if policy.should_log(now) or (kind not in logged_kinds and len(logged_kinds) < MAX_LOGGED_KINDS):
        logged_kinds.add(kind)
        if policy.attempts == 1:
            log.warning("source input failed: %s; retrying every %g s: %s", reason, delay, url)
        else:
            log.warning("source input still down after %.0f s (%d attempts; last: %s); retrying every "
                        "%g s: %s", policy.outage(now), policy.attempts, reason, delay, url)  # fmt: skip
    return delay
