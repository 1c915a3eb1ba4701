"""Process lifecycle shared by every node: pid file, signals, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

log = logging.getLogger("swarmcast.node")


@contextlib.contextmanager
def pid_file(directory: Path, port: int) -> Iterator[Path]:
    """``acestream-<port>.pid`` in ``directory`` for as long as the node runs (the Ace Stream engine's name)."""
    path = directory / f"acestream-{port}.pid"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


async def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` where ``stop`` is set on SIGTERM or SIGINT; ``main`` shuts down cleanly when it is."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
