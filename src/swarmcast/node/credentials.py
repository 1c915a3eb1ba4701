"""Support credentials over HTTP: the source's endpoint under the access token, and the support node's fetcher.

A support node that reaches the source's web interface with the service access token (the Ace Stream way of
starting one: ``--url http://SOURCE/app/TOKEN/get_transport_file?format=raw``) proves it is the operator's. It
asks ``GET /app/TOKEN/get_credential?port=<its listen port>`` and the source answers a support credential for the
IP the request came from (swarmcast/credential.py), valid for ``CREDENTIAL_LIFETIME``. The support node fetches
it at start, presents it to every peer, and fetches a fresh one when half of it is left. Without a token the
endpoint does not exist: the operator lists support nodes with ``--support-node`` and the source grants them a
credential over the peer protocol instead (swarm/authority.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from swarmcast.credential import CredentialError, CredentialIssuer, CredentialRole
from swarmcast.swarm.core import Swarm
from swarmcast.wire.messages import MAX_CREDENTIAL_SIZE

log = logging.getLogger("swarmcast.credentials")

FETCH_TIMEOUT = 10.0
RETRY_INTERVAL = 10.0  # seconds between attempts after a failed fetch
MIN_REFRESH = 5.0  # never refetch more often than this, whatever the credential's expiry says
_TOKEN_PATH = re.compile(r"^/app/([^/]+)/get_transport_file$")


def credential_routes(app: web.Application, issuer: CredentialIssuer, token: str | None) -> None:
    """``GET /app/<token>/get_credential?port=N`` on the source; nothing when it has no token."""
    if token is None:
        return

    async def get_credential(request: web.Request) -> web.Response:
        if request.match_info.get("token") != token:
            return web.json_response({"result": None, "error": "invalid access token"}, status=403)
        text = request.query.get("port", "0")
        if not text.isdigit() or int(text) > 0xFFFF:
            return web.json_response({"result": None, "error": f"port {text!r} is not 0..65535"}, status=400)
        if request.remote is None:
            return web.json_response({"result": None, "error": "no remote address"}, status=400)
        data = issuer.issue(CredentialRole.SUPPORT, request.remote, int(text), time.time())
        log.info("issued a support credential to %s (port %s) over HTTP", request.remote, text)
        return web.Response(body=data, content_type="application/octet-stream")

    app.router.add_get("/app/{token}/get_credential", get_credential)


def credential_url(transport_url: str, port: int) -> str | None:
    """Where a support node started with ``--url`` asks for its credential: only a token URL qualifies."""
    parts = urlsplit(transport_url)
    match = _TOKEN_PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or match is None:
        return None
    path = f"/app/{match.group(1)}/get_credential"
    return urlunsplit((parts.scheme, parts.netloc, path, f"port={port}", ""))


class CredentialFetcher:
    """Keeps a support node's credential fresh from the source's token endpoint; owns one task."""

    def __init__(self, url: str, swarm: Swarm) -> None:
        self.url = url
        self.swarm = swarm
        self._task: asyncio.Task[None] | None = None

    async def fetch_once(self) -> float:
        """Fetch and adopt; the seconds until the next fetch (RETRY_INTERVAL after a failure, which is logged)."""
        try:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                data = await response.content.read(MAX_CREDENTIAL_SIZE + 1)
            credential = self.swarm.authority.adopt(data, time.monotonic())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:  # CredentialError is a ValueError
            kind = "refused" if isinstance(error, CredentialError) else "failed"
            log.warning("support credential from %s %s: %s", self.url, kind, error)
            return RETRY_INTERVAL
        return max(MIN_REFRESH, (credential.expires - time.time()) / 2)

    def start(self, first_delay: float) -> None:
        self._task = asyncio.create_task(self._refresh(first_delay), name="credential-refresh")

    async def _refresh(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            delay = await self.fetch_once()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
