"""Process lifecycle shared by every node: pid file, signals, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

log = logging.getLogger("swarmcast.node")

# The Ace Stream engine's process name: streaming-utils finds a node's pid in acestreamengine-<port>.pid and checks
# that psutil.Process(pid).name() is this before it signals it. 15 characters, the longest a Linux comm can be.
ENGINE_PROCESS_NAME = "acestreamengine"
ENGINE_PROGRAMS = frozenset({"acestreamengine", "start-engine"})  # our console scripts of the engine's command line
_PR_SET_NAME = 15


def set_process_name(name: str) -> bool:
    """Set this process's name (Linux ``/proc/<pid>/comm``, what ``ps`` and psutil show); False where unsupported.

    Started as the ``acestreamengine`` console script the kernel names the process after the script already; this
    makes ``start-engine`` (and ``python -m``) match too."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # noqa: PLC0415 - Linux only, and only for the Ace Stream command line

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def pid_file_name(port: int, program: str | None = None) -> str:
    """``acestreamengine-<port>.pid`` when run as the Ace Stream engine's command line (the name streaming-utils
    looks for), else ``acestream-<port>.pid`` (the name in Ace Stream's docs)."""
    program = Path(sys.argv[0]).name if program is None else program
    prefix = ENGINE_PROCESS_NAME if program in ENGINE_PROGRAMS else "acestream"
    return f"{prefix}-{port}.pid"


@contextlib.contextmanager
def pid_file(directory: Path, port: int) -> Iterator[Path]:
    """One pid file in ``directory`` for as long as the node runs (``pid_file_name``); removed when it stops,
    SIGTERM included (the node's stop path runs this block's exit)."""
    path = directory / pid_file_name(port)
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


async def run_until_stopped_or_done(work: Awaitable[None], stop: asyncio.Event, *, name: str) -> None:
    """Run ``work`` (a node's input pump) until it ends or ``stop`` is set; both tasks are cancelled and awaited
    before returning, and an exception of ``work`` is raised here (the caller's ``finally`` then cleans up)."""
    work_task = asyncio.ensure_future(work)
    work_task.set_name(name)
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done() and not work_task.cancelled() and work_task.exception() is not None:
            raise work_task.exception()  # type: ignore[misc]
    finally:
        for task in (work_task, stop_task):
            task.cancel()
        await asyncio.gather(work_task, stop_task, return_exceptions=True)


# Young-generation threshold of a running node (CPython's default is 700 allocations): see tune_gc.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running node; called once, when start-up is done.

    ``gc.freeze()`` moves what the imports and the command line created (modules, classes, functions: most of a
    node's objects, none of them ever garbage) out of the collector's sight, so the full collections that still
    run as usual only look at what the node made since. The larger young threshold lets a node's per-message
    objects (messages, events, frames: they live for one event-loop turn) die by reference counting before a
    collection looks at them, instead of a young collection every 700 allocations.
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (a node is a server: 1024 is a desktop default); returns it.

    The connection budgets are then fitted to what the limit leaves (see PeerHost), so running out of descriptors
    refuses connections instead of failing a disk write.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, error)
    log.debug("open-file limit %d", soft)
    return soft


ACCEPT_ERROR_LOG_INTERVAL = 10.0


class AcceptErrorLog:
    """A loop exception handler that logs asyncio's accept failures (EMFILE, ENFILE, ENOBUFS, ENOMEM) once per
    interval with a count, instead of a traceback per failed accept (asyncio tries a whole backlog of them, then
    pauses accepting for a second: new connections wait or are refused meanwhile, the node carries on)."""

    def __init__(self, interval: float = ACCEPT_ERROR_LOG_INTERVAL) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        now = loop.time()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        log.error("cannot accept connections: %s (%d more since the last report); refusing new connections for now",
                  context.get("exception"), self.suppressed)  # fmt: skip
        self._last, self.suppressed = now, 0


@contextlib.contextmanager
def signal_handler(sig: signal.Signals, callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on the running loop when ``sig`` arrives, for as long as the block runs (a node's SIGHUP:
    re-read its ip filter). Outside the block the signal's default action is back."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(sig)


async def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` where ``stop`` is set on SIGTERM or SIGINT; ``main`` shuts down cleanly when it is.

    Every node role and the engine start here, so this is also where the open-file limit is raised and the garbage
    collector tuned (``tune_gc``).
    """
    raise_open_file_limit()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorLog())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
