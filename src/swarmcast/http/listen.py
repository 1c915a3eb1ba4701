"""One web application listening on ``--bind``/``--port`` for as long as a block runs: the servers that are only
a web application (registry, metatracker, fleet receiver) share it, and a port they cannot take is one
operator-readable line."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator

from aiohttp import web


class ListenError(Exception):
    """``--port P: cannot listen on HOST:P: <why>``."""


@contextlib.asynccontextmanager
async def listening(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    """``app`` answers on ``host:port`` inside the block and is cleaned up after it, whatever happens;
    ListenError when the port cannot be taken."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            why = "already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
            raise ListenError(f"--port {port}: cannot listen on {host}:{port}: {why}") from None
        yield
    finally:
        await runner.cleanup()
