"""Ask a broadcast's metatrackers for trackers and start nodes, at join and every ``interval`` seconds.

How this works. :class:`MetatrackerClient` owns one asyncio task, which owns (through a TaskGroup) one loop per
metatracker URL (the transport file's ``metatrackers``, at most ``MAX_METATRACKERS``). Each loop waits until its
:class:`~swarmcast.discovery.metatracker_protocol.MetatrackerSchedule` says the metatracker is due, sends
``GET URL?infohash=<hex>``, reads at most ``MAX_ANSWER_BYTES`` within ``timeout`` (redirects are not followed: the
URL is where the broadcaster said, not where an answer points), parses the answer (metatracker_protocol.py) and
hands it to ``on_answer``. The owner (node/joiner.py's Membership, the source) adds the trackers to its announcer
and the start nodes to its swarm: that is how a running broadcast gets new trackers and start nodes without a
restart or a new transport file. Trackers are only ever added, never removed (the announcer's own cap bounds them).
``close()`` cancels the task tree and closes the HTTP session.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from swarmcast.discovery.metatracker_protocol import (
    MAX_ANSWER_BYTES,
    MetatrackerAnswer,
    MetatrackerError,
    MetatrackerSchedule,
    check_metatracker_url,
    parse_answer,
    query_url,
)

__all__ = ["MetatrackerClient", "MetatrackerStatus", "fetch_answer"]

log = logging.getLogger("swarmcast.discovery")

MAX_METATRACKERS = 8  # URLs one client asks (the transport file holds at most as many)
REQUEST_TIMEOUT = 10.0  # seconds for one whole request, connect to last byte

AnswerCallback = Callable[[str, MetatrackerAnswer], None]


async def fetch_answer(session: aiohttp.ClientSession, url: str, info_hash: bytes, *,
                       timeout: float = REQUEST_TIMEOUT) -> MetatrackerAnswer:  # fmt: skip
    """One request to one metatracker; every failure is a MetatrackerError."""
    target = query_url(url, info_hash)
    try:
        async with asyncio.timeout(timeout), session.get(target, allow_redirects=False) as response:
            if response.status != 200:
                raise MetatrackerError(f"answered HTTP {response.status}")
            if (response.content_length or 0) > MAX_ANSWER_BYTES:
                raise MetatrackerError(f"answer of {response.content_length} bytes, more than {MAX_ANSWER_BYTES}")
            body = bytearray()
            # read(n) returns what has arrived, up to n: loop to the end, never past the cap.
            while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise MetatrackerError(f"answer of more than {MAX_ANSWER_BYTES} bytes")
    except MetatrackerError:
        raise
    except TimeoutError:
        raise MetatrackerError(f"no answer within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as error:
        # ValueError: yarl refuses some URLs only when they are used.
        raise MetatrackerError(f"{type(error).__name__}: {error}".rstrip(": ")) from None
    return parse_answer(bytes(body))


@dataclass(frozen=True, slots=True)
class MetatrackerStatus:
    url: str
    answers: int  # good answers so far
    consecutive_failures: int
    last_error: str | None


class _Metatracker:
    def __init__(self, url: str, schedule: MetatrackerSchedule) -> None:
        self.url = url
        self.schedule = schedule
        self.answers = 0
        self.last_error: str | None = None


class MetatrackerClient:
    """Asks every metatracker of one broadcast; see the module docstring."""

    def __init__(self, urls: Iterable[str], *, info_hash: bytes, on_answer: AnswerCallback,
                 timeout: float = REQUEST_TIMEOUT, session: aiohttp.ClientSession | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        query_url("http://x/", info_hash)  # a bad info_hash is our bug: raise here, not in the task
        self._info_hash = info_hash
        self._on_answer = on_answer
        self._timeout = timeout
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._rng = rng or random.Random()
        self._metatrackers: dict[str, _Metatracker] = {}
        for url in urls:
            if url in self._metatrackers:
                continue
            if len(self._metatrackers) >= MAX_METATRACKERS:
                raise ValueError(f"cannot add metatracker {url!r}: already {MAX_METATRACKERS}")
            check_metatracker_url(url)
            self._metatrackers[url] = _Metatracker(url, MetatrackerSchedule(rng=self._rng))
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._metatrackers)

    def status(self) -> list[MetatrackerStatus]:
        return [MetatrackerStatus(m.url, m.answers, m.schedule.failures, m.last_error)
                for m in self._metatrackers.values()]  # fmt: skip

    def start(self) -> None:
        """Start asking (from within the event loop); nothing to do without URLs."""
        if self._closed:
            raise RuntimeError("MetatrackerClient is closed")
        if self._task is not None:
            raise RuntimeError("MetatrackerClient already started")
        if not self._metatrackers:
            return
        if self._session is None:
            self._own_session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=f"metatracker {self._info_hash.hex()}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # unlike awaiting it, does not turn its cancellation into ours
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("metatracker task failed", exc_info=self._task.exception())
        if self._own_session is not None:
            await self._own_session.close()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for metatracker in self._metatrackers.values():
                group.create_task(self._loop(metatracker), name=f"metatracker {metatracker.url}")

    async def _loop(self, metatracker: _Metatracker) -> None:
        loop = asyncio.get_running_loop()
        session = self._session or self._own_session
        assert session is not None
        while True:
            await asyncio.sleep(metatracker.schedule.delay(loop.time()))
            try:
                answer = await fetch_answer(session, metatracker.url, self._info_hash, timeout=self._timeout)
            except MetatrackerError as error:
                wait = metatracker.schedule.on_failure(loop.time())
                # INFO on the change from working (or new) to failing; repeats go to DEBUG.
                level = logging.INFO if metatracker.schedule.failures == 1 else logging.DEBUG
                log.log(level, "metatracker %s failed: %s; retrying in %.1f s", metatracker.url, error, wait)
                metatracker.last_error = str(error)
                continue
            wait = metatracker.schedule.on_success(loop.time(), answer.interval)
            level = logging.INFO if metatracker.answers == 0 or metatracker.last_error else logging.DEBUG
            metatracker.answers += 1
            metatracker.last_error = None
            log.log(level, "metatracker %s: %d tracker(s), %d start node(s)%s; next in %.0f s", metatracker.url,
                    len(answer.trackers), len(answer.startup_nodes),
                    f", {answer.skipped} entries ignored" if answer.skipped else "", wait)  # fmt: skip
            try:
                self._on_answer(metatracker.url, answer)
            except Exception:  # the consumer's bug must not stop the asking
                log.exception("metatracker answer callback failed")
