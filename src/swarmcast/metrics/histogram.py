"""A bucket histogram the engine fills as things happen (a player's startup, the delay a keyframe was played at)
and /metrics reads at scrape time.

It is plain Python, not prometheus-client: a viewer engine that nobody scrapes never imports that library, and an
observation costs a bisect and two additions (a few per second at most: once per player start, once per keyframe).
"""

from __future__ import annotations

import bisect
import math

# Seconds from a player's arrival to its first byte (cold starts wait for a keyframe: seconds, not milliseconds).
STARTUP_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
# Seconds a played keyframe is behind the source's clock (the stamp the source put in the stream).
DELAY_BUCKETS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)


class Histogram:
    """Counts per bucket (upper bounds ``buckets``, then +Inf), their sum and count; never reset."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"histogram buckets must be increasing and distinct: {buckets}")
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` for every bucket and +Inf, as Prometheus exposes them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return out
