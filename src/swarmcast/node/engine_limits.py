"""The viewer engine's admission rules: sessions, broadcast slots, lookups and streams, sans-IO (``now`` passed in).

How this works. Everything a local HTTP client can make the engine hold is counted here against a named limit,
and a request beyond a limit is refused (:class:`EngineBusyError`, answered 503); nothing that serves a player is ever
evicted to make room for a newcomer.

- **Sessions** (``format=json``): at most ``MAX_SESSIONS``. A session nobody plays or polls for
  ``SESSION_IDLE_SECONDS`` expires; one with a player attached never does.
- **Broadcasts** go through up to three states. A *lookup* is a content id we know nothing about (``id=`` or
  ``magnet=``): it holds one of ``MAX_LOOKUPS`` lookup slots, not a broadcast slot, until peers give us its
  descriptor. A *starting* broadcast has a descriptor but no piece yet; a *playing* one has produced a piece.
  Starting and playing broadcasts share ``MAX_BROADCASTS`` slots. A broadcast that has never produced a piece is
  left as soon as nobody waits for it, and at the latest ``startup_timeout`` after it was joined, so a flood of
  unknown ids holds nothing beyond a short lookup. A playing broadcast is left ``IDLE_SECONDS`` after its last
  player.
- **Streams** (players reading MPEG-TS): at most ``MAX_STREAMS`` at once, ``MAX_STREAMS_PER_CLIENT`` per remote
  address.
"""

from __future__ import annotations

import contextlib
import enum
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

IDLE_SECONDS = 30.0  # a playing broadcast with no player is left after this
MAX_BROADCASTS = 16  # starting + playing broadcasts
MAX_LOOKUPS = 4  # content ids being looked up (no descriptor yet)
LOOKUP_GRACE = 2.0  # a broadcast that never produced a piece and that nobody waits for is left after this
MAX_SESSIONS = 256  # format=json playback sessions
SESSION_IDLE_SECONDS = 60.0  # a session nobody plays or polls for this long expires
MAX_STREAMS = 64  # players reading at once
MAX_STREAMS_PER_CLIENT = 16  # players reading at once from one remote address
RETRY_AFTER_SECONDS = 5  # the Retry-After of a 503


class EngineBusyError(Exception):
    """A limit is reached; the message names it. Answered 503: the client may try again later."""


class BroadcastState(enum.Enum):
    LOOKUP = "lookup"  # a content id only: waiting for the descriptor from peers
    STARTING = "starting"  # descriptor known, no piece yet
    PLAYING = "playing"  # has produced at least one verified piece


def check_join(state: BroadcastState, *, lookups: int, broadcasts: int) -> None:
    """Raise EngineBusyError if a new broadcast in ``state`` cannot be joined next to what the engine holds.

    ``broadcasts`` counts starting and playing ones. A lookup also needs a free broadcast slot, as it becomes a
    starting broadcast once the descriptor comes (then it may exceed MAX_BROADCASTS by the lookups under way at
    most: the total stays within MAX_BROADCASTS + MAX_LOOKUPS).
    """
    if broadcasts >= MAX_BROADCASTS:
        raise EngineBusyError(f"the engine already plays {MAX_BROADCASTS} broadcasts (the limit); try again later")
    if state is BroadcastState.LOOKUP and lookups >= MAX_LOOKUPS:
        raise EngineBusyError(f"the engine is already looking up {MAX_LOOKUPS} unknown content ids (the limit); "
                         "try again later")  # fmt: skip


def should_leave(
    state: BroadcastState,
    *,
    players: int,
    sessions: int,
    joined: float,
    last_active: float,
    now: float,
    startup_timeout: float,
) -> bool:
    """Whether the engine should leave a broadcast now (the reaper asks every second)."""
    if state is BroadcastState.PLAYING:
        return players == 0 and now - last_active > IDLE_SECONDS
    if state is BroadcastState.STARTING and players == 0:
        # Known (it has its descriptor) but nobody plays yet: nothing is asked of the swarm, so it cannot start. A
        # JSON session whose player has not come yet keeps it while the session lives (the demo prints the playback
        # URL and waits for a person to open it; unused sessions expire after SESSION_IDLE_SECONDS). The startup
        # timeout runs from the first player's arrival (``joined`` is reset then).
        return sessions == 0 and now - last_active > LOOKUP_GRACE
    # Never produced a piece: a lookup or a start that failed holds its slot no longer than the startup timeout,
    # whoever waits, and not at all once nobody waits (players are counted while they wait for the first piece).
    if now - joined > startup_timeout:
        return True
    return players == 0 and sessions == 0 and now - last_active > LOOKUP_GRACE


B = TypeVar("B")


@dataclass(eq=False)
class Session(Generic[B]):
    """A ``format=json`` playback session: an id the player comes back with, bound to one broadcast."""

    session_id: str
    broadcast: B
    created: float
    last_used: float
    players: int = 0  # readers of its playback URL right now
    stopped: bool = False  # its players end (within a poll interval)


class SessionTable(Generic[B]):
    """The engine's JSON sessions: bounded, idle ones expire, live ones are never evicted."""

    def __init__(self, *, limit: int = MAX_SESSIONS, idle_seconds: float = SESSION_IDLE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session[B]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def values(self) -> list[Session[B]]:
        return list(self._sessions.values())

    def add(self, broadcast: B, now: float) -> Session[B]:
        """A new session, or EngineBusyError when the table is full of sessions that are still in use."""
        if len(self._sessions) >= self.limit:
            self.expire(now)
        if len(self._sessions) >= self.limit:
            raise EngineBusyError(f"the engine already has {self.limit} playback sessions (the limit); "
                             "stop one (command_url?method=stop) or try again later")  # fmt: skip
        session = Session(secrets.token_hex(16), broadcast, created=now, last_used=now)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str, now: float) -> Session[B] | None:
        """The session (its use counts as activity), or None if unknown or expired."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = now
        return session

    def remove(self, session_id: str) -> Session[B] | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.stopped = True
        return session

    def remove_broadcast(self, broadcast: B) -> None:
        for session in [s for s in self._sessions.values() if s.broadcast is broadcast]:
            self.remove(session.session_id)

    def count(self, broadcast: B) -> int:
        return sum(1 for s in self._sessions.values() if s.broadcast is broadcast)

    def expire(self, now: float) -> list[Session[B]]:
        """Remove (and stop) the sessions nobody played or polled for ``idle_seconds``; never one with a player."""
        stale = [s for s in self._sessions.values() if s.players == 0 and now - s.last_used > self.idle_seconds]
        for session in stale:
            self.remove(session.session_id)
        return stale


class StreamCounter:
    """Players reading at once, in total and per remote address."""

    def __init__(self, *, limit: int = MAX_STREAMS, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.limit = limit
        self.per_client = per_client
        self.total = 0
        self._by_client: dict[str, int] = {}

    def acquire(self, client: str) -> None:
        if self.total >= self.limit:
            raise EngineBusyError(f"the engine already serves {self.limit} streams (the limit); try again later")
        if self._by_client.get(client, 0) >= self.per_client:
            raise EngineBusyError(f"{client} already reads {self.per_client} streams (the per-client limit)")
        self.total += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1

    @contextlib.contextmanager
    def slot(self, client: str) -> Iterator[None]:
        """Hold one stream slot for the block; EngineBusyError if none is free."""
        self.acquire(client)
        try:
            yield
        finally:
            self.release(client)

    def release(self, client: str) -> None:
        count = self._by_client[client] - 1
        if count:
            self._by_client[client] = count
        else:
            del self._by_client[client]
        self.total -= 1
