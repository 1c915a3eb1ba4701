"""Which reader takes a ``--source`` URL: an RTMP pull (remuxed to MPEG-TS), or else MPEG-TS / HLS over HTTP(S).

Every reader has ``read_ts_source``'s contract (chunks of TS for ever, reconnecting, the InputStatus kept), so the
source and standby nodes do not care which one runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from swarmcast.ingest.hls import HlsSettings
from swarmcast.ingest.hls import read_source as read_ts_or_hls_source
from swarmcast.ingest.http_ts import DEFAULT_READ_TIMEOUT, source_url_problem
from swarmcast.ingest.rtmp_pull import is_rtmp_url, read_rtmp_source, rtmp_url_problem
from swarmcast.ingest.status import InputStatus


def source_problem(url: str) -> str | None:
    """Why ``url`` can never be read as a source (None if it can be tried)."""
    if is_rtmp_url(url):
        return rtmp_url_problem(url)
    problem = source_url_problem(url)
    if problem is not None and "://" in url and not url.lower().startswith(("http://", "https://")):
        return f"{url[:200]!r}: the source reads MPEG-TS or HLS over http:// or https://, or pulls rtmp://"
    return problem


def read_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    on_reconnect: Callable[[], None] | None = None,
    status: InputStatus | None = None,
    hls: HlsSettings | None = None,
) -> AsyncIterator[bytes]:
    if is_rtmp_url(url):
        return read_rtmp_source(url, reconnect_interval=reconnect_interval, read_timeout=read_timeout,
                                on_reconnect=on_reconnect, status=status)  # fmt: skip
    return read_ts_or_hls_source(url, reconnect_interval=reconnect_interval, read_timeout=read_timeout,
                                 on_reconnect=on_reconnect, status=status, hls=hls)  # fmt: skip
