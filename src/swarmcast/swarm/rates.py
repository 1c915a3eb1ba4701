"""Transfer speeds as exponentially decaying byte rates; the caller passes the time."""

from __future__ import annotations

import math


class RateMeter:
    def __init__(self, *, half_life: float = 2.0) -> None:
        self._decay = math.log(2) / half_life
        self._rate = 0.0
        self._last: float | None = None
        self.total = 0

    def add(self, amount: int, now: float) -> None:
        self._advance(now)
        self._rate += amount * self._decay
        self.total += amount

    def rate(self, now: float) -> float:
        """Bytes per second, averaged over roughly the last half-life."""
        self._advance(now)
        return self._rate

    def _advance(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._rate *= math.exp(-self._decay * (now - self._last))
        if self._last is None or now > self._last:
            self._last = now
