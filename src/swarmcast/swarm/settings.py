"""The operator's settings of a running swarm (max_peers, upload slots and limit, download_from), changed
without a restart.

How this works: ``Swarm.reconfigure`` replaces its frozen ``SwarmConfig`` with ``updated`` and then calls ``apply``,
which brings every part that copied a setting at construction into line with the new config: the choker takes
the new slot count and rechokes at once (fewer slots choke the peers ranked lowest, more unchoke waiting ones);
the dialer forgets candidates outside a new ``download_from`` and pins the ones in it; each session's
``may_download`` is recomputed (INTERESTED or NOT_INTERESTED sent when it changes, requests to a peer we may no
longer download from are forgotten). A lower ``max_peers`` returns the peers to drop, the least useful first;
the broadcaster's nodes (verified credentials) and pinned addresses go last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

from swarmcast.swarm.config import Role, SwarmConfig
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.wire.messages import Interested, Message, NotInterested

if TYPE_CHECKING:
    from swarmcast.swarm.core import Swarm


class Unchanged(Enum):
    """``download_from`` not given (None is a value of its own: no restriction)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def updated(
    config: SwarmConfig, *, max_peers: int | None = None, upload_slots: int | None = None,
    download_from: frozenset[Address] | Unchanged | None = UNCHANGED, upload_limit: int | None = None,
) -> SwarmConfig:  # fmt: skip
    """``config`` with the given settings replaced; a bad value is our caller's bug (the web interface checks)."""
    if max_peers is not None and max_peers < 1:
        raise ValueError(f"max_peers must be at least 1, not {max_peers}")
    if upload_slots is not None and upload_slots < 0:
        raise ValueError(f"upload_slots must not be negative, not {upload_slots}")
    if upload_limit is not None and upload_limit < 0:
        raise ValueError(f"upload_limit must not be negative, not {upload_limit}")
    config = replace(
        config,
        max_peers=config.max_peers if max_peers is None else max_peers,
        upload_slots=config.upload_slots if upload_slots is None else upload_slots,
        upload_limit=config.upload_limit if upload_limit is None else upload_limit,
    )
    if not isinstance(download_from, Unchanged):
        config = replace(config, download_from=download_from)
    return config


def excess(sessions: list[PeerSession], max_peers: int, pinned: set[Address], now: float) -> list[PeerSession]:
    """The sessions beyond ``max_peers`` to let go: ordinary peers before the broadcaster's nodes and pinned
    addresses, and among those the ones we exchange least with (newest first on a tie: they lose least)."""
    surplus = len(sessions) - max_peers
    if surplus <= 0:
        return []

    def keep_rank(session: PeerSession) -> tuple[bool, float, float]:
        important = session.is_seeder or session.address in pinned
        return (important, session.up.rate(now) + session.down.rate(now), -session.connected_at)

    return sorted(sessions, key=keep_rank)[:surplus]


def apply(swarm: Swarm, now: float, send: Callable[[PeerSession, Message, float], None]) -> list[PeerSession]:
    """Bring the choker, dialer and sessions in line with ``swarm.config``; returns the sessions to drop."""
    config = swarm.config
    allowed = config.download_from
    swarm.dialer.allow(allowed)
    if allowed is not None and config.role is not Role.SOURCE:  # a source downloads from nobody: it dials nobody
        swarm.dialer.add(sorted(allowed), now=now, pinned=True)
    for session in swarm.sessions.values():
        may = allowed is None or session.address in allowed
        if may == session.may_download:
            continue
        session.may_download = may
        if config.role is Role.SOURCE:
            continue  # a source never downloads, so it never said INTERESTED
        if may and not session.sent_interested:
            session.sent_interested = True
            send(session, Interested(), now)
        elif not may:
            swarm.picker.forget(session)
            if session.sent_interested:
                session.sent_interested = False
                send(session, NotInterested(), now)
    swarm.reading.claims_changed()
    swarm.choker.set_slots(config.upload_slots, now)
    swarm.uploader.set_limit(config.upload_limit, now)
    pinned = {a for a, c in swarm.dialer.candidates.items() if c.pinned}
    return excess(list(swarm.sessions.values()), config.max_peers, pinned, now)
