"""A node's or engine's link to the registry: register, post its streams, heartbeat, deregister.

How this works. :class:`HeartbeatSchedule` is the sans-IO core: given the outcome of each request and the time,
it says what to send next and when (register, heartbeat, or wait out a backoff). :class:`RegistryClient` is the
thin asyncio driver that owns one task: it waits until the node can describe itself (a source knows its content
id only once its input flowed), registers, posts the source's streams, then sends a heartbeat with the node's
figures every ``heartbeat_interval`` the registry named. A 404 to a heartbeat means the registry forgot the node
(restarted with a new database, or swept it as gone): it registers again at once. Anything else that goes wrong
(refused connection, timeout, 5xx, a body that is too large or not the JSON the contract promises) is a failure:
the next attempt waits ``1, 2, 4 ... BACKOFF_MAX`` s. On a clean stop the node is deregistered (DELETE) within
``DEREGISTER_TIMEOUT``.

The registry is never in the media path: nothing here blocks the node, every request is bounded in time
(``REQUEST_TIMEOUT``) and in the bytes read (``MAX_RESPONSE_BYTES``), and a registry that is down, hangs or
answers garbage only costs log lines (one per change of state, not one per attempt).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import aiohttp

from swarmcast.registry.http_client import (
    MAX_RESPONSE_BYTES,
    RegistryError,
    client_session,
    error_text,
    request_json,
)
from swarmcast.tokens import TOKEN_ENV as TOKEN_ENV  # noqa: PLC0414 - re-exported; defined once in tokens.py

log = logging.getLogger("swarmcast.registry.client")

MAX_URL_LENGTH = 1024
DEREGISTER_TIMEOUT = 2.0  # the DELETE on a clean stop: a dead registry must not hold up a node's exit
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
REFUSED_BACKOFF = 60.0  # 401/403/400 to a registration: wrong token or a registry that refuses us; retry slowly
DEFAULT_HEARTBEAT_INTERVAL = 5.0
MIN_HEARTBEAT_INTERVAL = 1.0  # what the registry may ask for, whatever it answers
MAX_HEARTBEAT_INTERVAL = 300.0
STREAM_RETRY = 30.0  # a stream the registry refused (a 409: its name held by a live stream) is posted again after this
DESCRIBE_POLL = 0.5  # how often a node that cannot describe itself yet (no content id) is asked again
MAX_NODE_ID_LENGTH = 64
ROLES = ("source", "support", "start", "engine", "broadcaster")


def check_registry_url(text: str) -> str:
    """``--registry URL``: an http(s) URL with a host; the base the ``/api/...`` paths are appended to."""
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"URL of {len(text)} characters, more than {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError as error:
        raise ValueError(f"{text!r} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give the registry's base URL, without ?query or #fragment")
    return text.rstrip("/")


@dataclass(frozen=True)
class RegistryEndpoint:
    """Where the registry is and the write token (None: reads only; registering is then refused with a 401)."""

    url: str
    token: str | None = None

    def api(self, *parts: str) -> str:
        return self.url + "/api/" + "/".join(quote(p, safe="") for p in parts)

    def headers(self, *, write: bool) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if write and self.token else {}

    def __repr__(self) -> str:  # never the token (it would end up in logs and tracebacks)
        return f"RegistryEndpoint(url={self.url!r}, token={'<set>' if self.token else None})"


def endpoint_from(url: str | None, token: str | None,
                  environ: Mapping[str, str] = os.environ) -> RegistryEndpoint | None:  # fmt: skip
    """The endpoint of ``--registry`` and ``--registry-token`` (else ``$SWARMCAST_REGISTRY_NODE_TOKEN``); None without
    a URL."""
    if url is None:
        return None
    return RegistryEndpoint(url, token or environ.get(TOKEN_ENV) or None)


@dataclass(frozen=True)
class StreamReport:
    """A broadcast as a source registers it (POST /api/streams). ``bitrate`` in bits/s."""

    content_id: str  # 40 hex
    name: str  # the registry name, [a-z0-9._-]{1,64}
    title: str
    transport: bytes  # the transport file
    categories: tuple[str, ...] = ()
    quality: str | None = None
    bitrate: int | None = None
    renditions: tuple[Mapping[str, object], ...] | None = None

    def body(self, node_id: str) -> dict[str, object]:
        return {
            "content_id": self.content_id, "name": self.name, "title": self.title,
            "categories": list(self.categories), "quality": self.quality, "bitrate": self.bitrate,
            "renditions": [dict(r) for r in self.renditions] if self.renditions is not None else None,
            "transport": base64.b64encode(self.transport).decode("ascii"), "node_id": node_id,
        }  # fmt: skip


@dataclass(frozen=True)
class NodeReport:
    """What a node registers as (POST /api/nodes). ``capacity_bps``: its upload limit in bits/s, None = none."""

    role: str
    address: str | None  # "host:port" where peers reach it, None for an engine nobody can dial
    http: str | None  # its web interface, "http://host:port"
    version: str
    capacity_bps: int | None = None
    content_ids: tuple[str, ...] = ()
    name: str | None = None
    streams: tuple[StreamReport, ...] = field(default=(), compare=False)  # a source's broadcasts

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")

    def body(self) -> dict[str, object]:
        return {"role": self.role, "address": self.address, "http": self.http, "capacity_bps": self.capacity_bps,
                "version": self.version, "content_ids": list(self.content_ids), "name": self.name}  # fmt: skip


# -- the sans-IO core ---------------------------------------------------------------------------------------------


class Action(enum.Enum):
    REGISTER = "register"
    HEARTBEAT = "heartbeat"


class Outcome(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # 404 to a heartbeat: the registry forgot us
    REFUSED = "refused"  # 400/401/403/409: the registry will not take this (token, body); retrying soon is useless
    FAILED = "failed"  # unreachable, timeout, 5xx, garbage


@dataclass
class HeartbeatSchedule:
    """When to send what. ``next_at`` is the monotonic time of the next request; ``action`` what it is."""

    node_id: str | None = None
    interval: float = DEFAULT_HEARTBEAT_INTERVAL
    next_at: float = 0.0
    failures: int = 0  # consecutive
    down_since: float | None = None  # when the registry stopped answering (for the log), None while it answers

    @property
    def action(self) -> Action:
        return Action.REGISTER if self.node_id is None else Action.HEARTBEAT

    def backoff(self) -> float:
        return min(BACKOFF_MIN * 2.0 ** min(self.failures - 1, 16), BACKOFF_MAX)

    def registered(self, node_id: str, interval: float, now: float) -> None:
        self.node_id = node_id
        self.interval = min(max(interval, MIN_HEARTBEAT_INTERVAL), MAX_HEARTBEAT_INTERVAL)
        self._answered(now + self.interval)

    def outcome(self, outcome: Outcome, now: float) -> None:
        """The result of the request ``action`` named (a registration's success goes to :meth:`registered`)."""
        if outcome is Outcome.OK:
            self._answered(now + self.interval)
        elif outcome is Outcome.UNKNOWN:
            self.node_id = None
            self._answered(now)  # register again at once
        else:
            self.failures += 1
            if self.down_since is None:
                self.down_since = now
            wait = REFUSED_BACKOFF if outcome is Outcome.REFUSED else self.backoff()
            # A node the registry refuses to hear keeps its id: a heartbeat that fails is retried, the 404 that
            # comes when the registry lost it leads to a new registration.
            self.next_at = now + wait

    def _answered(self, next_at: float) -> None:
        self.failures = 0
        self.down_since = None
        self.next_at = next_at


@dataclass
class StreamPosts:
    """Which of a source's streams to POST, sans-IO. A stream is posted when the registry does not have it as it is
    now; one it refused (a name another live stream holds: 409; a body it will not take) is posted again, the same
    body, ``STREAM_RETRY`` s after the refusal (the other stream may have ended), or at once when it changed."""

    posted: dict[str, StreamReport] = field(default_factory=dict)  # content id -> what the registry has
    refused: dict[str, tuple[StreamReport, float]] = field(default_factory=dict)  # content id -> (body, when)

    def due(self, stream: StreamReport, now: float) -> bool:
        if self.posted.get(stream.content_id) == stream:
            return False
        refused = self.refused.get(stream.content_id)
        return refused is None or refused[0] != stream or now >= refused[1] + STREAM_RETRY

    def accepted(self, stream: StreamReport) -> None:
        self.posted[stream.content_id] = stream
        self.refused.pop(stream.content_id, None)

    def refused_at(self, stream: StreamReport, now: float) -> None:
        self.refused[stream.content_id] = (stream, now)

    def forget(self) -> None:
        """A new node id: the registry has none of them for it."""
        self.posted.clear()
        self.refused.clear()


def parse_registration(answer: object) -> tuple[str, float]:
    """``{node_id, heartbeat_interval, timeout}`` of a 201; RegistryError when it is not that."""
    if not isinstance(answer, dict):
        raise RegistryError("registration answer is not a JSON object")
    node_id = answer.get("node_id")
    if not isinstance(node_id, str) or not 0 < len(node_id) <= MAX_NODE_ID_LENGTH or not node_id.isprintable():
        raise RegistryError(f"registration answer has no usable node_id: {str(node_id)[:80]!r}")
    if "/" in node_id or node_id in (".", ".."):
        raise RegistryError(f"registration answer's node_id {node_id[:80]!r} is not a path segment")
    interval = answer.get("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not math.isfinite(interval):
        interval = DEFAULT_HEARTBEAT_INTERVAL
    return node_id, float(interval)


# -- the driver -----------------------------------------------------------------------------------------------------

Describe = Callable[[], NodeReport | None]  # None: not ready to register yet
Figures = Callable[[], dict[str, object]]


class RegistryClient:
    """Keeps one node registered with the registry until it is stopped; deregisters then.

    ``describe`` says what the node is (None until it can say: a source without its content id yet); it is called
    before every registration and heartbeat, so a source's new broadcast is posted when it appears. ``figures`` are
    the monitor figures sent with each heartbeat. Neither may block; an exception in them is logged and the node
    carries on.
    """

    def __init__(self, endpoint: RegistryEndpoint, describe: Describe, figures: Figures, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.describe = describe
        self.figures = figures
        self.clock = clock
        self.schedule = HeartbeatSchedule()
        self.registrations = 0  # successful, in all (for tests and the log)
        self.heartbeats = 0
        self.last_error: str | None = None
        self._streams = StreamPosts()  # what the registry has of our streams, for this node id
        self._figures_refused = False  # the registry refused our figures once: heartbeats go without them
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    @property
    def node_id(self) -> str | None:
        return self.schedule.node_id

    def start(self, stop: asyncio.Event | None = None) -> None:
        """Start the task; with ``stop``, deregister as soon as it is set (the node may take longer to close)."""
        self._task = asyncio.create_task(self._run(stop), name="registry-client")

    async def close(self) -> None:
        """Stop heartbeats and deregister (a request under way is abandoned; the DELETE is bounded by
        DEREGISTER_TIMEOUT); idempotent."""
        self._closing.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(DEREGISTER_TIMEOUT + 1.0):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self, stop: asyncio.Event | None) -> None:
        self._session = client_session()
        waiters: list[asyncio.Future[object]] = [
            asyncio.ensure_future(event.wait()) for event in (self._closing, stop) if event is not None
        ]
        try:
            await self._loop(waiters)
            await self._deregister()
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            session, self._session = self._session, None
            await session.close()

    async def _loop(self, waiters: list[asyncio.Future[object]]) -> None:
        """Send what the schedule says when it says, until a waiter is done; a request under way is cancelled."""
        while not any(w.done() for w in waiters):
            delay = self.schedule.next_at - self.clock()
            work: asyncio.Future[object] = asyncio.ensure_future(asyncio.sleep(delay) if delay > 0 else self._step())
            pending: list[asyncio.Future[object]] = [work, *waiters]
            try:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not work.done():
                    work.cancel()
                await asyncio.gather(work, return_exceptions=True)

    async def _step(self) -> None:
        try:
            report = self.describe()
        except Exception:  # the node's own bug: keep it out of the node
            log.exception("registry: cannot describe this node")
            report = None
        if report is None:
            self.schedule.next_at = self.clock() + DESCRIBE_POLL
            return
        action = self.schedule.action
        try:
            outcome = await (self._register(report) if action is Action.REGISTER else self._heartbeat(report))
            if outcome is Outcome.OK:
                await self._post_streams(report)
        except RegistryError as error:
            self._note_failure(str(error))
            outcome = Outcome.FAILED
        if not (action is Action.REGISTER and outcome is Outcome.OK):  # a registration scheduled itself
            self.schedule.outcome(outcome, self.clock())

    def _note_failure(self, error: str) -> None:
        if self.schedule.down_since is None:  # once per outage, not once per attempt
            log.warning("registry %s: %s; retrying with backoff (the node carries on)", self.endpoint.url, error)
        self.last_error = error

    async def _register(self, report: NodeReport) -> Outcome:
        assert self._session is not None
        status, answer = await request_json(self._session, "POST", self.endpoint.api("nodes"),
                                            headers=self.endpoint.headers(write=True), body=report.body())  # fmt: skip
        if status in (200, 201):
            node_id, interval = parse_registration(answer)
            if self.schedule.down_since is not None:
                log.info("registry %s answers again", self.endpoint.url)
            self.schedule.registered(node_id, interval, self.clock())
            self.registrations += 1
            self._streams.forget()
            log.info("registered with %s as %s %s (heartbeat every %g s)", self.endpoint.url, report.role, node_id,
                     self.schedule.interval)  # fmt: skip
            return Outcome.OK
        text = error_text(answer, status)
        if status in (400, 401, 403, 409, 413, 422):
            if self.schedule.down_since is None:
                log.warning("registry %s refused to register this %s: %s", self.endpoint.url, report.role, text)
            self.last_error = text
            return Outcome.REFUSED
        self._note_failure(f"registration answered {text}")
        return Outcome.FAILED

    async def _heartbeat(self, report: NodeReport) -> Outcome:
        assert self._session is not None
        assert self.schedule.node_id is not None
        figures: dict[str, object] = {}
        if not self._figures_refused:
            try:
                figures = self.figures()
            except Exception:
                log.exception("registry: cannot collect this node's figures")
        body = {"content_ids": list(report.content_ids), "figures": figures}
        url = self.endpoint.api("nodes", self.schedule.node_id, "heartbeat")
        status, answer = await request_json(self._session, "POST", url, headers=self.endpoint.headers(write=True),
                                            body=body)  # fmt: skip
        if status in (200, 204):
            if self.schedule.down_since is not None:
                log.info("registry %s answers again", self.endpoint.url)
            self.heartbeats += 1
            return Outcome.OK
        if status == 404:
            log.info("registry %s no longer knows node %s: registering again", self.endpoint.url,
                     self.schedule.node_id)  # fmt: skip
            return Outcome.UNKNOWN
        text = error_text(answer, status)
        if status in (400, 413, 422) and not self._figures_refused:
            # Figures it will not take (a registry of another version): keep the node alive without them, on
            # time, rather than fall silent and be swept as gone.
            log.warning("registry %s refused a heartbeat's figures (%s): sending heartbeats without them",
                        self.endpoint.url, text)  # fmt: skip
            self._figures_refused = True
            self.last_error = text
            return Outcome.OK
        if status in (400, 401, 403, 413, 422):
            if self.schedule.down_since is None:
                log.warning("registry %s refused a heartbeat: %s", self.endpoint.url, text)
            self.last_error = text
            return Outcome.REFUSED
        self._note_failure(f"heartbeat answered {text}")
        return Outcome.FAILED

    async def _post_streams(self, report: NodeReport) -> None:
        """POST every stream the registry does not have as it is now (new, or changed since)."""
        assert self._session is not None
        assert self.schedule.node_id is not None
        for stream in report.streams:
            if not self._streams.due(stream, self.clock()):
                continue
            status, answer = await request_json(
                self._session, "POST", self.endpoint.api("streams"), headers=self.endpoint.headers(write=True),
                body=stream.body(self.schedule.node_id), limit=MAX_RESPONSE_BYTES,
            )  # fmt: skip
            if status in (200, 201):
                self._streams.accepted(stream)
                log.info("registered stream %r (%s) with %s", stream.name, stream.content_id, self.endpoint.url)
            elif status == 404:  # the node is gone from the registry: the next heartbeat's 404 registers it again
                return
            elif 400 <= status < 500:
                # A name another stream holds, a body it will not take: the same body is tried again only after
                # STREAM_RETRY (the name's holder may have ended by then), not at every heartbeat.
                self._streams.refused_at(stream, self.clock())
                log.warning("registry %s refused stream %r: %s", self.endpoint.url, stream.name,
                            error_text(answer, status))  # fmt: skip
            else:
                raise RegistryError(f"stream registration answered {error_text(answer, status)}")

    async def _deregister(self) -> None:
        node_id = self.schedule.node_id
        if node_id is None:
            return
        self.schedule.node_id = None
        url = self.endpoint.api("nodes", node_id)
        try:
            async with client_session(DEREGISTER_TIMEOUT) as session:
                status, answer = await request_json(session, "DELETE", url, headers=self.endpoint.headers(write=True))
        except RegistryError as error:
            log.info("registry %s: could not deregister %s: %s", self.endpoint.url, node_id, error)
            return
        if status in (200, 204, 404):
            log.info("deregistered %s from %s", node_id, self.endpoint.url)
        else:
            log.info("registry %s: deregistering %s answered %s", self.endpoint.url, node_id,
                     error_text(answer, status))  # fmt: skip

@contextlib.asynccontextmanager
async def registered(client: RegistryClient | None, stop: asyncio.Event) -> AsyncIterator[RegistryClient | None]:
    """Keep ``client`` registered for the block (nothing without one); deregistered as soon as ``stop`` is set."""
    if client is None:
        yield None
        return
    client.start(stop)
    try:
        yield client
    finally:
        await client.close()
