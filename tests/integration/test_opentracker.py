"""Tracker client and Announcer against a real opentracker and against our InternalTracker, on loopback."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from swarmcast.discovery.announcer import Announcer
from swarmcast.discovery.tracker_client import announce
from swarmcast.discovery.tracker_protocol import AnnounceEvent, AnnounceRequest, TrackerError
from swarmcast.discovery.tracker_server import InternalTracker
from tests.conftest import OpenTrackerFactory
from tests.opentracker import NOT_AUTHORIZED

# Bytes that need escaping, to prove the binary info_hash survives every hop.
INFO_HASH = b"\x00&=%+/ \xff\x80?#" + b"swarmcast"
OTHER_HASH = b"\x13" * 20


def peer_id(n: int) -> bytes:
    return b"-SC0001-%012d" % n


def started(port: int, *, info_hash: bytes = INFO_HASH) -> AnnounceRequest:
    return AnnounceRequest(info_hash, peer_id(port), port, 0, 0, 1000, AnnounceEvent.STARTED)


def dead_udp_url() -> str:
    # A port nobody listens on: the kernel answers ICMP port unreachable, so the client fails fast.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"udp://127.0.0.1:{port}/announce"


class PeerLog:
    """Collects on_peers deliveries; lets a test wait until certain addresses have arrived."""

    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.calls = 0
        self._changed = asyncio.Event()

    def __call__(self, peers: list[tuple[str, int]]) -> None:
        self.calls += 1
        self.peers.update(peers)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[PeerLog], bool], *, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_peer(self, peer: tuple[str, int]) -> None:
        await self.wait_for(lambda log: peer in log.peers)


def make_announcer(urls: list[str], port: int, log: PeerLog, *, min_interval: float = 0.2,
                   max_interval: float = 0.5, max_backoff: float = 0.5, timeout: float = 3.0,
                   stop_timeout: float = 2.0) -> Announcer:
    """Intervals of a fraction of a second, so a test sees several rounds quickly."""
    return Announcer(urls, info_hash=INFO_HASH, peer_id=peer_id(port), port=port, stats=lambda: (0, 0, 1000),
                     on_peers=log, min_interval=min_interval, max_interval=max_interval, max_backoff=max_backoff,
                     timeout=timeout, stop_timeout=stop_timeout)


@pytest.fixture
async def internal_tracker() -> AsyncIterator[tuple[InternalTracker, str]]:
    """InternalTracker mounted on a real aiohttp server on loopback; yields it and its announce URL."""
    tracker = InternalTracker(interval=60)
    app = web.Application()
    tracker.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield tracker, f"http://127.0.0.1:{port}/announce"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------------------------------
# One-shot announces against opentracker


@pytest.mark.parametrize("kind", ["http", "udp"])
async def test_two_peers_learn_each_other_via_opentracker(opentracker_factory: OpenTrackerFactory, kind: str) -> None:
    http_url, udp_url = opentracker_factory([INFO_HASH])
    url = http_url if kind == "http" else udp_url
    first = await announce(url, started(7001), timeout=5)
    second = await announce(url, started(7002), timeout=5)
    # opentracker lists the requester itself too, so look for the other one rather than compare whole lists.
    assert ("127.0.0.1", 7001) in second.peers
    assert second.incomplete == 2
    assert first.interval > 0
    again = await announce(url, AnnounceRequest(INFO_HASH, peer_id(7001), 7001, 0, 0, 1000, AnnounceEvent.NONE),
                           timeout=5)
    assert ("127.0.0.1", 7002) in again.peers


@pytest.mark.parametrize("kind", ["http", "udp"])
async def test_announces_leave_from_the_local_address_given(opentracker_factory: OpenTrackerFactory, kind: str) -> None:
    """A node bound to one address announces from it: the tracker lists that address, which is where it listens."""
    http_url, udp_url = opentracker_factory([INFO_HASH])
    url = http_url if kind == "http" else udp_url
    await announce(url, started(7011), timeout=5, local_address=("127.0.0.5", 0))
    seen = await announce(url, started(7012), timeout=5)
    assert ("127.0.0.5", 7011) in seen.peers, seen.peers
    assert ("127.0.0.1", 7011) not in seen.peers


async def test_opentracker_refuses_unlisted_info_hash(opentracker_factory: OpenTrackerFactory) -> None:
    tracker = opentracker_factory([INFO_HASH])
    with pytest.raises(TrackerError, match=f"^{re.escape(NOT_AUTHORIZED)}$"):
        await announce(tracker.http_url, started(7003, info_hash=OTHER_HASH), timeout=5)
    # Over UDP opentracker gives no reason, only an empty announce reply.
    with pytest.raises(TrackerError, match="refused"):
        await announce(tracker.udp_url, started(7003, info_hash=OTHER_HASH), timeout=5)
    # The whitelist helper: once allowed, the same announce goes through.
    await asyncio.to_thread(tracker.allow, [OTHER_HASH])
    response = await announce(tracker.http_url, started(7003, info_hash=OTHER_HASH), timeout=5)
    assert ("127.0.0.1", 7003) in response.peers


async def test_unreachable_trackers_raise_tracker_error() -> None:
    with pytest.raises(TrackerError, match="refused"):
        await announce(dead_udp_url(), started(7004), timeout=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackerError, match=re.escape("127.0.0.1")):
        await announce(f"http://127.0.0.1:{port}/announce", started(7004), timeout=2)


async def test_unknown_scheme_is_value_error_naming_url() -> None:
    with pytest.raises(ValueError, match=re.escape("wss://t.example/announce")):
        await announce("wss://t.example/announce", started(7005))


# --------------------------------------------------------------------------------------------------------------------
# Against the internal tracker over real HTTP


async def test_client_and_internal_tracker_agree_on_binary_hash(
    internal_tracker: tuple[InternalTracker, str],
) -> None:
    tracker, url = internal_tracker
    await announce(url, started(7101), timeout=5)
    response = await announce(url, started(7102), timeout=5)
    assert response.peers == (("127.0.0.1", 7101),)
    assert tracker.peers(INFO_HASH) == [("127.0.0.1", 7101), ("127.0.0.1", 7102)]


async def test_internal_tracker_whitelist_over_http(internal_tracker: tuple[InternalTracker, str]) -> None:
    tracker, url = internal_tracker
    tracker.allowed_info_hashes = {INFO_HASH}
    with pytest.raises(TrackerError, match=f"^{re.escape(NOT_AUTHORIZED)}$"):
        await announce(url, started(7103, info_hash=OTHER_HASH), timeout=5)


# --------------------------------------------------------------------------------------------------------------------
# Announcer


async def announcers_find_each_other(urls: list[str]) -> tuple[Announcer, Announcer]:
    log_a, log_b = PeerLog(), PeerLog()
    a, b = make_announcer(urls, 7201, log_a), make_announcer(urls, 7202, log_b)
    a.start()
    b.start()
    try:
        await log_a.wait_for_peer(("127.0.0.1", 7202))
        await log_b.wait_for_peer(("127.0.0.1", 7201))
    except BaseException:
        await a.close()
        await b.close()
        raise
    return a, b


async def test_announcers_find_each_other_via_opentracker(opentracker_factory: OpenTrackerFactory) -> None:
    tracker = opentracker_factory([INFO_HASH])
    a, b = await announcers_find_each_other([tracker.http_url, tracker.udp_url])
    # Peers may arrive through one protocol before the other has answered: wait (bounded) for both.
    for _ in range(100):
        if all(s.started for s in a.status() + b.status()):
            break
        await asyncio.sleep(0.05)
    assert all(s.started and s.consecutive_failures == 0 for s in a.status() + b.status())
    await a.close()
    await b.close()
    # Both sent "stopped" over both protocols, so a newcomer finds neither.
    newcomer = await announce(tracker.http_url, started(7203), timeout=5)
    assert set(newcomer.peers) == {("127.0.0.1", 7203)}


async def test_announcers_find_each_other_via_internal_tracker(
    internal_tracker: tuple[InternalTracker, str],
) -> None:
    tracker, url = internal_tracker
    a, b = await announcers_find_each_other([url])
    assert sorted(tracker.peers(INFO_HASH)) == [("127.0.0.1", 7201), ("127.0.0.1", 7202)]
    await a.close()
    await b.close()
    assert tracker.peers(INFO_HASH) == []


async def test_announcer_survives_a_dead_tracker_and_logs_once(
    internal_tracker: tuple[InternalTracker, str], caplog: pytest.LogCaptureFixture,
) -> None:
    _, url = internal_tracker
    dead = dead_udp_url()
    caplog.set_level(logging.DEBUG, logger="swarmcast.discovery")
    log_a, log_b = PeerLog(), PeerLog()
    async with (
        make_announcer([dead], 7301, log_a, min_interval=0.05, max_backoff=0.1) as a,
        make_announcer([url], 7302, log_b),
    ):
        await asyncio.sleep(0.5)  # several failed rounds against the dead tracker
        [status] = a.status()
        assert status.consecutive_failures >= 3
        assert status.last_error is not None
        assert not status.started
        # Adding a working tracker at run time brings the peers in.
        a.add_trackers([url, dead])
        assert a.trackers == (dead, url)
        await log_a.wait_for_peer(("127.0.0.1", 7302))
    failures = [r for r in caplog.records if "failed" in r.getMessage() and dead in r.getMessage()]
    assert len(failures) >= 3
    assert [r.levelno for r in failures].count(logging.INFO) == 1  # the rest went to DEBUG


async def test_trigger_reannounces_and_redelivers(internal_tracker: tuple[InternalTracker, str]) -> None:
    _, url = internal_tracker
    log_a, log_b = PeerLog(), PeerLog()
    # Long intervals: without trigger() nobody would re-announce during this test.
    async with make_announcer([url], 7401, log_a, min_interval=0.1, max_interval=600):
        await asyncio.sleep(0.2)
        async with make_announcer([url], 7402, log_b, min_interval=0.1, max_interval=600) as b:
            await log_b.wait_for_peer(("127.0.0.1", 7401))
            assert not log_a.peers  # A announced first and alone, and will not ask again for 600 s
            calls = log_b.calls
            b.trigger()  # B already has A; trigger forgets that, so A is delivered again
            await log_b.wait_for(lambda log: log.calls > calls)
            assert ("127.0.0.1", 7401) in log_b.peers


async def test_close_is_bounded_when_trackers_do_not_answer() -> None:
    # A UDP socket that never answers: close() must still return within about stop_timeout.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        url = f"udp://127.0.0.1:{silent.getsockname()[1]}/announce"
        announcer = make_announcer([url], 7501, PeerLog(), timeout=30.0, stop_timeout=0.5)
        announcer.start()
        await asyncio.sleep(0.1)  # the started announce is in flight
        loop = asyncio.get_running_loop()
        began = loop.time()
        await announcer.close()
        assert loop.time() - began < 5  # generous: the point is "bounded", not a timing
    finally:
        silent.close()


async def test_announcer_rejects_bad_urls() -> None:
    with pytest.raises(ValueError, match=re.escape("ftp://x/announce")):
        make_announcer(["ftp://x/announce"], 7601, PeerLog())
