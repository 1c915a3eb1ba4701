"""Time series for the dashboard's charts, aggregated from heartbeat samples (GET /api/series and
GET /api/nodes/<node_id>/series).

How this works. Samples arrive at each node's own pace, so they are put in buckets of ``step`` seconds aligned to
multiples of ``step`` (the same buckets on every poll, whatever the moment): in a bucket, a node's figures are
the mean of its samples there, and the network's are summed over the nodes (viewers, uploads, stalls) or
averaged over the engines that report them (delay behind live, startup time: a sum of delays means nothing).
``step`` is at least the heartbeat interval and grows with ``seconds`` so that no answer has more than
``MAX_POINTS`` points; the rows read are capped at ``MAX_SERIES_ROWS``, newest first.

Broadcaster upload is what the source, support, start and broadcaster nodes send; viewers' upload is what the
engines send: the two lines of the offload chart.

A series answer reads up to ``MAX_SERIES_ROWS`` rows, and anyone may ask: ``SeriesReader`` lets at most
``SERIES_CONCURRENCY`` such reads run at once and answers the same question (same stream or node, same seconds)
from its cache for ``SERIES_CACHE_SECONDS`` (heartbeats come every 5 s: nothing newer is lost).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarmcast.registry.models import samples

MAX_POINTS = 720  # points of one series answer
MAX_SERIES_ROWS = 100_000  # sample rows read for one answer (the newest)
BROADCASTER_ROLES = frozenset({"source", "support", "start", "broadcaster"})
STREAM_KEYS = ("viewers", "broadcaster_upload_bps", "viewer_upload_bps", "delay_s", "startup_s", "stalls")
NODE_KEYS = ("cpu_percent", "rss_bytes", "upload_bps", "download_bps")
SERIES_CONCURRENCY = 2  # series reads (and dashboard reads) running at once; the others wait their turn
SERIES_CACHE_SECONDS = 2.0  # one question's answer is reused this long
SERIES_CACHE_ENTRIES = 256  # distinct questions cached (the oldest go first)

T = TypeVar("T")


class SeriesReader:
    """Bounds the expensive public reads: a semaphore of ``concurrency`` and a short cache keyed by the question.
    ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(self, concurrency: int = SERIES_CONCURRENCY, ttl: float = SERIES_CACHE_SECONDS,
                 entries: int = SERIES_CACHE_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._semaphore = asyncio.Semaphore(concurrency)
        self._cache: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._ttl, self._entries, self._clock = ttl, entries, clock
        self.running = 0  # reads in progress now
        self.peak = 0  # the most ever in progress at once

    def _cached(self, key: Hashable) -> tuple[bool, Any]:
        hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return True, hit[1]
        return False, None

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        found, value = self._cached(key)
        if found:
            return value  # type: ignore[no-any-return]
        async with self._semaphore:
            found, value = self._cached(key)  # answered while we waited
            if found:
                return value  # type: ignore[no-any-return]
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                result = await compute()
            finally:
                self.running -= 1
            self._cache[key] = (self._clock(), result)
            self._cache.move_to_end(key)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
            return result


def step_for(seconds: float, interval: float) -> float:
    return max(interval, math.ceil(seconds / MAX_POINTS))


def stream_series(
    conn: Connection, content_id: str | None, now: float, seconds: float, interval: float
) -> dict[str, Any]:
    """The network's figures (``content_id`` None: every stream) over the last ``seconds``."""
    step = step_for(seconds, interval)
    since = math.floor((now - seconds) / step) * step
    # Network-wide, one node's rows for several streams are separate cells, each counted as it reports.
    stream = samples.c.content_id if content_id is None else sa.literal(content_id)
    query = sa.select(samples.c.node_id, samples.c.role, samples.c.at, samples.c.figures, stream.label("cid")).where(
        samples.c.at >= since,
        samples.c.content_id.is_not(None) if content_id is None else samples.c.content_id == content_id,
    )
    rows = conn.execute(query.order_by(samples.c.at.desc()).limit(MAX_SERIES_ROWS))
    # (bucket, node, stream) -> the figures' sums and counts, then the mean per bucket and node and stream
    cells: dict[tuple[int, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    roles: dict[str, str] = {}
    for node_id, role, at, figures, cid in rows:
        roles[node_id] = role
        cell = cells[(int(at // step), node_id, cid)]
        values = dict(figures)
        if role == "engine":
            values.setdefault("viewers", 1)  # an engine carrying a stream is one viewer unless it says more
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cell[key][0] += value
                cell[key][1] += 1
    buckets: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (bucket, node_id, _cid), cell in cells.items():
        mean = {key: total / count for key, (total, count) in cell.items()}
        out = buckets[bucket]
        engine = roles[node_id] == "engine"
        if engine:
            out["viewers"].append(mean.get("viewers", 1.0))
            out["stalls"].append(mean.get("stalls", 0.0))
            for key in ("delay_s", "startup_s"):
                if key in mean:
                    out[key].append(mean[key])
        upload = mean.get("upload_bps")
        if upload is not None:
            out["viewer_upload_bps" if engine else "broadcaster_upload_bps"].append(upload)
    result: dict[str, Any] = {"t": []}
    result.update({key: [] for key in STREAM_KEYS})
    for bucket in sorted(buckets):
        out = buckets[bucket]
        result["t"].append(bucket * step)
        for key in ("viewers", "broadcaster_upload_bps", "viewer_upload_bps", "stalls"):
            result[key].append(_round(sum(out[key])))
        for key in ("delay_s", "startup_s"):
            found = out[key]
            result[key].append(_round(sum(found) / len(found)) if found else None)
    result["step"] = step
    return result


def node_series(conn: Connection, node_id: str, now: float, seconds: float, interval: float) -> dict[str, Any]:
    """One node's own figures (CPU, memory, upload, download) over the last ``seconds``."""
    step = step_for(seconds, interval)
    since = math.floor((now - seconds) / step) * step
    query = (
        sa.select(samples.c.at, samples.c.figures)
        .where(samples.c.node_id == node_id, samples.c.content_id.is_(None), samples.c.at >= since)
        .order_by(samples.c.at.desc()).limit(MAX_SERIES_ROWS)
    )  # fmt: skip
    cells: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for at, figures in conn.execute(query):
        cell = cells[int(at // step)]
        for key in NODE_KEYS:
            value = figures.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cell[key][0] += value
                cell[key][1] += 1
    result: dict[str, Any] = {"t": []}
    result.update({key: [] for key in NODE_KEYS})
    for bucket in sorted(cells):
        result["t"].append(bucket * step)
        for key in NODE_KEYS:
            total, count = cells[bucket].get(key, (0.0, 0))
            result[key].append(_round(total / count) if count else None)
    result["step"] = step
    return result


def _round(value: float) -> float:
    return round(value, 3)
