"""MPEG-TS over HTTP as a source, with reconnects.

``read_ts_source`` yields chunks of the stream for as long as it runs: when the server closes the stream, errors,
or sends nothing for ``stall_timeout`` seconds, it logs, waits (exponential backoff from ``reconnect_interval``,
capped) and reconnects. The consumer is told of each reconnect through ``on_reconnect`` so it can mark a
discontinuity; the broadcast itself (content id, piece numbering) carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp

log = logging.getLogger("swarmcast.ingest")

CHUNK_SIZE = 64 * 1024
MAX_BACKOFF = 30.0


async def read_ts_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    stall_timeout: float = 5.0,
    on_reconnect: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    backoff = reconnect_interval
    attempt = 0
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=stall_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            attempt += 1
            received = 0
            try:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status, message=response.reason or ""
                        )
                    log.info("source connected: %s", url)
                    if attempt > 1 and on_reconnect is not None:
                        on_reconnect()
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        received += len(chunk)
                        backoff = reconnect_interval
                        yield chunk
                log.warning("source ended the stream after %d bytes: %s", received, url)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                log.warning("source failed (%s: %s); reconnecting in %.1f s", type(error).__name__, error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
