"""The registry's sweeper: one background task, owned by the app (``app.cleanup_ctx``), that marks nodes gone
when their heartbeats stop and keeps the samples table bounded.

Every ``sweep_interval(timeout)`` seconds (at most 1 s, so a node silent for ``--heartbeat-timeout`` is gone
within about a second of it), live nodes silent that long become "gone"; every ``PRUNE_INTERVAL`` seconds,
samples older than ``--retention`` or past the newest ``--max-samples`` rows, and nodes gone or left for
``--retention``, are deleted. A database that fails is logged once per outage and tried again next round:
the sweeper never ends on its own, and the app cancels and awaits it at shutdown.

Nothing is marked gone before the registry has run ``--heartbeat-timeout`` seconds (``may_mark_gone``): after
an outage, every node's last heartbeat is older than that, and the nodes are still running and retrying (with
back-off up to a minute); they must get one timeout to reach the registry again before they count as gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from functools import partial

import sqlalchemy as sa
from aiohttp import web

from swarmcast.registry import queries
from swarmcast.registry.db import first_line
from swarmcast.registry.metrics import METRICS_KEY, RegistryMetrics
from swarmcast.registry.state import STATE_KEY, RegistryState

log = logging.getLogger("swarmcast.registry")

MAX_SWEEP_INTERVAL = 1.0  # seconds between two looks for silent nodes
PRUNE_INTERVAL = 30.0  # seconds between two prunings of samples and old nodes


def sweep_interval(timeout: float) -> float:
    return max(0.05, min(MAX_SWEEP_INTERVAL, timeout / 4))


def may_mark_gone(started_at: float, now: float, timeout: float) -> bool:
    """Whether silent nodes may be marked gone yet: only once the registry has been up for ``timeout``."""
    return now >= started_at + timeout


async def run_sweeper(state: RegistryState, metrics: RegistryMetrics | None, started_at: float | None = None) -> None:
    settings = state.settings
    interval = sweep_interval(settings.heartbeat_timeout)
    started = time.time() if started_at is None else started_at
    next_prune = 0.0
    failing = False
    while True:
        now = time.time()
        try:
            gone = 0
            if may_mark_gone(started, now, settings.heartbeat_timeout):
                gone = await state.db.run(partial(queries.mark_gone, now=now, timeout=settings.heartbeat_timeout))
            if gone:
                log.info("%d node(s) marked gone: no heartbeat for %g s", gone, settings.heartbeat_timeout)
                if metrics is not None:
                    metrics.marked_gone.inc(gone)
            if now >= next_prune:
                pruned = await state.db.run(partial(queries.prune, now=now, retention=settings.retention,
                                                    max_samples=settings.max_samples))
                if any(pruned):
                    log.debug("pruned %d sample(s) and %d old node(s)", *pruned)
                next_prune = now + PRUNE_INTERVAL
            if failing:
                log.info("sweeper: the database answers again")
            failing = False
        except sa.exc.SQLAlchemyError as error:
            if not failing:
                log.warning("sweeper: database unavailable, trying again: %s", first_line(error)[:300])
            failing = True
        await asyncio.sleep(interval)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """``app.cleanup_ctx`` entry: the sweeper runs while the app does, and is cancelled and awaited after."""
    task = asyncio.create_task(run_sweeper(app[STATE_KEY], app.get(METRICS_KEY)), name="registry-sweeper")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
