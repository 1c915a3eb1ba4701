"""MPEG-TS over HTTP as a source, with reconnects.

``read_ts_source`` yields chunks of the stream for as long as it runs: when the server closes the stream, errors,
or sends nothing for ``stall_timeout`` seconds, it waits ``reconnect_interval`` (fixed, see
swarmcast.ingest.reconnect) and tries again, for ever. A connection attempt itself is bounded by
``CONNECT_TIMEOUT``. The consumer is told of each reconnect through ``on_reconnect`` so it can mark a
discontinuity; the broadcast itself (content id, piece numbering) carries on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp

from swarmcast.ingest.reconnect import ReconnectPolicy

log = logging.getLogger("swarmcast.ingest")

CHUNK_SIZE = 64 * 1024
# Seconds a TCP connect to the input may take: a black-holed input must not stretch an attempt to the OS's
# two-minute SYN timeout; 3 s covers the first SYN retransmit (1 s) with room for a slow path.
CONNECT_TIMEOUT = 3.0


async def read_ts_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    stall_timeout: float = 5.0,
    on_reconnect: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    policy = ReconnectPolicy(reconnect_interval)
    ever_connected = False
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=stall_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            received = 0
            reason: str
            try:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status, message=response.reason or ""
                        )
                    if policy.down_since is not None:
                        log.info("source connected again after %.1f s (%d attempts): %s",
                                 policy.outage(time.monotonic()), policy.attempts, url)  # fmt: skip
                    else:
                        log.info("source connected: %s", url)
                    policy.connected()
                    if ever_connected and on_reconnect is not None:
                        on_reconnect()
                    ever_connected = True
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        received += len(chunk)
                        yield chunk
                reason = f"the stream ended after {received} bytes"
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            now = time.monotonic()
            delay = policy.failed(now)
            if policy.should_log(now):
                if policy.attempts == 1:
                    log.warning("source failed (%s); retrying every %.1f s: %s", reason, delay, url)
                else:
                    log.warning("source still down after %.0f s (%d attempts; last: %s): %s",
                                policy.outage(now), policy.attempts, reason, url)  # fmt: skip
            await asyncio.sleep(delay)
