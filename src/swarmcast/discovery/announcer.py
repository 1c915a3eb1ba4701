"""Keep a swarm announced to a set of trackers for as long as a node runs.

How this works: :class:`Announcer` owns one asyncio task, which owns (through a TaskGroup) one child task per
tracker. Each child loops: wait until its :class:`TrackerSchedule` says the tracker is due (or a trigger wakes it),
announce, hand the peers to ``on_peers``, and let the schedule pick the next time: the tracker's interval clamped to
our bounds after a success, exponential backoff with jitter after a failure. The schedule is sans-IO (time is an
argument), so its rules are tested without sleeping. ``close()`` cancels the task tree and then tells every tracker
that may know us that we stopped, concurrently and with a short timeout, so shutting down is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import aiohttp

from swarmcast.discovery.tracker_client import announce, check_tracker_url, session_from
from swarmcast.discovery.tracker_protocol import AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerError

__all__ = ["Announcer", "TrackerSchedule", "TrackerStatus"]

logger = logging.getLogger("swarmcast.discovery")

MAX_TRACKERS: Final = 64
# Peers already handed to on_peers are not handed again until trigger(); this bounds that memory.
MAX_REMEMBERED_PEERS: Final = 10_000
# Backoff delays are spread by this fraction so that nodes restarted together do not retry in lockstep.
BACKOFF_JITTER: Final = 0.1

Stats = Callable[[], tuple[int, int, int]]
PeersCallback = Callable[[list[tuple[str, int]]], None]


class TrackerSchedule:
    """When to announce next to one tracker. Sans-IO: every method takes ``now``."""

    def __init__(self, *, min_interval: float, max_interval: float, max_backoff: float,
                 rng: random.Random | None = None) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError(f"need 0 < min_interval <= max_interval, got {min_interval} and {max_interval}")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.max_backoff = max(max_backoff, min_interval)
        self._rng = rng or random.Random()
        self.next_at = 0.0  # due at once
        self.last_success: float | None = None
        self.failures = 0  # consecutive

    def delay(self, now: float) -> float:
        return max(0.0, self.next_at - now)

    def on_success(self, now: float, interval: float) -> float:
        """Record a good answer; returns the clamped interval until the next announce."""
        self.failures = 0
        self.last_success = now
        wait = min(max(interval, self.min_interval), self.max_interval)
        self.next_at = now + wait
        return wait

    def on_failure(self, now: float) -> float:
        """Record a failed announce; returns the backoff delay (min_interval, doubling, capped at max_backoff)."""
        self.failures += 1
        base = min(self.min_interval * 2.0 ** min(self.failures - 1, 32), self.max_backoff)
        wait = base * self._rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
        self.next_at = now + wait
        return wait

    def on_trigger(self, now: float) -> None:
        """Announce soon, not sooner than min_interval after the last success; a failing tracker keeps its backoff."""
        if self.failures or self.last_success is None:
            return
        self.next_at = min(self.next_at, max(now, self.last_success + self.min_interval))


@dataclass(frozen=True, slots=True)
class TrackerStatus:
    url: str
    started: bool  # a "started" announce succeeded, so the tracker lists us
    consecutive_failures: int
    last_error: str | None
    last_peer_count: int


class _Tracker:
    def __init__(self, url: str, schedule: TrackerSchedule) -> None:
        self.url = url
        self.schedule = schedule
        self.wake = asyncio.Event()
        self.started = False
        self.in_flight = False
        self.last_error: str | None = None
        self.last_peer_count = 0


class Announcer:
    """Announces one swarm to many trackers; see the module docstring."""

    def __init__(
        self,
        trackers: Iterable[str],
        *,
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        stats: Stats,
        on_peers: PeersCallback,
        numwant: int = 50,
        min_interval: float = 15.0,
        max_interval: float = 1800.0,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        stop_timeout: float = 3.0,
        session: aiohttp.ClientSession | None = None,
        local_address: tuple[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # Validate everything here, once, so a bad value fails at construction rather than in a background task.
        AnnounceRequest(info_hash, peer_id, port, 0, 0, 0, AnnounceEvent.NONE, numwant)
        TrackerSchedule(min_interval=min_interval, max_interval=max_interval, max_backoff=max_backoff)
        self._info_hash = info_hash
        self._peer_id = peer_id
        self._port = port
        self._stats = stats
        self._on_peers = on_peers
        self._numwant = numwant
        self._min_interval = min_interval
        self._max_interval = max_interval
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._stop_timeout = stop_timeout
        self._session = session
        # Where announces leave from: a tracker lists the address an announce comes from, so a node bound to one
        # address (PeerHost.local_address) must announce from it, or peers are told an address nobody listens on.
        self._local_address = local_address
        self._own_session: aiohttp.ClientSession | None = None
        self._rng = rng or random.Random()
        self._trackers: dict[str, _Tracker] = {}
        self._pending: list[_Tracker] = []  # added but not yet given a task
        self._changed = asyncio.Event()
        self._delivered: dict[tuple[str, int], None] = {}  # insertion-ordered set, oldest first
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.add_trackers(trackers)

    # ---------------------------------------------------------------------------------------------------------------
    # Public API

    def start(self) -> None:
        """Start announcing (call from within the event loop)."""
        if self._closed:
            raise RuntimeError("Announcer is closed")
        if self._task is not None:
            raise RuntimeError("Announcer already started")
        if self._session is None and any(not t.url.startswith("udp:") for t in self._trackers.values()):
            self._own_session = session_from(self._local_address)
        self._task = asyncio.create_task(self._run(), name=f"announcer {self._info_hash.hex()}")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def trackers(self) -> tuple[str, ...]:
        return tuple(self._trackers)

    def status(self) -> list[TrackerStatus]:
        return [
            TrackerStatus(t.url, t.started, t.schedule.failures, t.last_error, t.last_peer_count)
            for t in self._trackers.values()
        ]

    def add_trackers(self, urls: Iterable[str]) -> None:
        """Add trackers (duplicates ignored); raises ValueError naming a URL we cannot announce to."""
        if self._closed:
            raise RuntimeError("Announcer is closed")
        for url in urls:
            if url in self._trackers:
                continue
            check_tracker_url(url)
            if len(self._trackers) >= MAX_TRACKERS:
                raise ValueError(f"cannot add tracker {url!r}: already {MAX_TRACKERS} trackers")
            tracker = _Tracker(url, TrackerSchedule(min_interval=self._min_interval, max_interval=self._max_interval,
                                                    max_backoff=self._max_backoff, rng=self._rng))
            self._trackers[url] = tracker
            self._pending.append(tracker)
        self._changed.set()

    def trigger(self) -> None:
        """Ask every healthy tracker for peers soon (rate-limited to one announce per min_interval per tracker).

        Peers already delivered become eligible again: the caller wants more peers, so ones it may have lost are
        worth another try.
        """
        self._delivered.clear()
        now = asyncio.get_running_loop().time()
        for tracker in self._trackers.values():
            tracker.schedule.on_trigger(now)
            tracker.wake.set()

    async def close(self) -> None:
        """Stop announcing, then send "stopped" to the trackers that may list us (bounded by stop_timeout)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait, unlike awaiting the task, does not turn the task's cancellation into ours.
            await asyncio.wait([self._task])
            if not self._task.cancelled() and self._task.exception() is not None:
                logger.error("announcer task failed", exc_info=self._task.exception())
        try:
            listed = [t for t in self._trackers.values() if t.started or t.in_flight]
            if listed:
                request = self._request(AnnounceEvent.STOPPED)
                await asyncio.gather(*(self._send_stopped(t, request) for t in listed))
        finally:
            if self._own_session is not None:
                await self._own_session.close()

    # ---------------------------------------------------------------------------------------------------------------
    # Internals

    def _request(self, event: AnnounceEvent) -> AnnounceRequest:
        uploaded, downloaded, left = self._stats()
        return AnnounceRequest(self._info_hash, self._peer_id, self._port, uploaded, downloaded, left, event,
                               self._numwant)

    async def _send_stopped(self, tracker: _Tracker, request: AnnounceRequest) -> None:
        try:
            await announce(tracker.url, request, timeout=self._stop_timeout, session=self._session_for(),
                           local_address=self._local_address)
        except TrackerError as exc:
            logger.debug("stopped announce to %s failed: %s", tracker.url, exc)
        tracker.started = False

    def _session_for(self) -> aiohttp.ClientSession | None:
        return self._session if self._session is not None else self._own_session

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                self._changed.clear()
                while self._pending:
                    tracker = self._pending.pop(0)
                    group.create_task(self._tracker_loop(tracker), name=f"announce {tracker.url}")
                await self._changed.wait()

    async def _wait_until_due(self, tracker: _Tracker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            tracker.wake.clear()  # before reading the schedule, so a trigger in between is not lost
            delay = tracker.schedule.delay(loop.time())
            if delay <= 0:
                return
            try:
                async with asyncio.timeout(delay):
                    await tracker.wake.wait()
            except TimeoutError:
                pass

    async def _tracker_loop(self, tracker: _Tracker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_until_due(tracker)
            try:
                request = self._request(AnnounceEvent.NONE if tracker.started else AnnounceEvent.STARTED)
                # Left set if we are cancelled mid-announce: the tracker may have listed us, so close() says stopped.
                tracker.in_flight = True
                response = await announce(tracker.url, request, timeout=self._timeout, session=self._session_for(),
                                          local_address=self._local_address)
            except TrackerError as exc:
                self._record_failure(tracker, str(exc), loop.time())
                continue
            except Exception as exc:  # a bug in stats() or below: say so loudly, but keep the node announced
                logger.exception("announce to %s crashed", tracker.url)
                self._record_failure(tracker, repr(exc), loop.time())
                continue
            self._record_success(tracker, request, response, loop.time())

    def _record_failure(self, tracker: _Tracker, error: str, now: float) -> None:
        tracker.in_flight = False
        wait = tracker.schedule.on_failure(now)
        # INFO only on the change from working (or new) to failing; repeats go to DEBUG so logs stay readable.
        level = logging.INFO if tracker.schedule.failures == 1 else logging.DEBUG
        logger.log(level, "tracker %s failed: %s; retrying in %.1f s", tracker.url, error, wait)
        tracker.last_error = error

    def _record_success(self, tracker: _Tracker, request: AnnounceRequest, response: AnnounceResponse,
                        now: float) -> None:
        tracker.in_flight = False
        recovered = tracker.last_error is not None
        first = not tracker.started
        wait = tracker.schedule.on_success(now, response.interval)
        tracker.started = True
        tracker.last_error = None
        tracker.last_peer_count = len(response.peers)
        level = logging.INFO if recovered or first else logging.DEBUG
        logger.log(level, "tracker %s %s: %d peers, next announce in %.0f s", tracker.url,
                   "recovered" if recovered else "re-announced" if request.event is AnnounceEvent.NONE else "announced",
                   len(response.peers), wait)
        self._deliver(response.peers)

    def _deliver(self, peers: Iterable[tuple[str, int]]) -> None:
        fresh = [peer for peer in peers if peer not in self._delivered]
        if not fresh:
            return
        for peer in fresh:
            self._delivered[peer] = None
        while len(self._delivered) > MAX_REMEMBERED_PEERS:
            del self._delivered[next(iter(self._delivered))]
        try:
            self._on_peers(fresh)
        except Exception:  # the consumer's bug must not stop the announcing
            logger.exception("on_peers callback failed")
