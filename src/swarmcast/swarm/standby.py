"""Hot standby of a source node, sans-IO: when to take over signing, when to give it back.

How this works. A standby runs the broadcast's key and input next to the primary source. While the primary lives
the standby is a follower: a support node with the SEEDER flag, connected to the primary (a pinned peer), holding
and serving verified pieces, and cutting its own copy of the input (so the cutter knows PAT, PMT and the next
keyframe) without signing any of it. ``StandbyMonitor.observe`` is called on every tick with what the swarm sees
of the primary and says when to act:

- TAKEOVER: the primary has not been connected for ``takeover_after`` seconds. The standby signs from
  ``newest + 1``, where ``newest`` is the highest index the primary announced to us (its HAVEs go out to every
  peer in the same write, so nobody can hold a later one) or that we hold, whichever is higher: numbering
  continues without a hole or a reused index, and the first piece is DISCONTINUITY + RANDOM_ACCESS.
- YIELD: after a takeover, the primary is connected again (the peer at the ``--standby-for`` address, whatever
  its flags) and announces a piece newer than our newest: it is signing ahead of us (a restarted primary
  continues past its .restart reservation, up to a block ahead), so we stop signing and follow it again.

The standby never signs while it is connected to the primary. See docs/design.md, "Hot standby", for the failure
model (split brain, and what engines do with two pieces for one index).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from swarmcast.wire.messages import Interested, NotInterested

if TYPE_CHECKING:
    from swarmcast.swarm.core import Role, Swarm

DEFAULT_TAKEOVER_AFTER = 2.0  # seconds without the primary before the standby signs
# Until the primary has been seen once, it gets this long: a standby that starts while the machine is busy must not
# take over (and sign beside a live primary) only because its first connection was slow.
STARTUP_GRACE = 10.0


class StandbyState(Enum):
    FOLLOWING = "following"
    ACTIVE = "active"


@dataclass(frozen=True)
class Takeover:
    index: int | None  # the first index to sign; None: nothing known, continue from our own .restart


@dataclass(frozen=True)
class Yield:
    primary_newest: int


class StandbyMonitor:
    def __init__(self, *, takeover_after: float, now: float) -> None:
        if takeover_after <= 0:
            raise ValueError("takeover_after must be positive")
        self.takeover_after = takeover_after
        self.state = StandbyState.FOLLOWING
        self.primary_newest: int | None = None  # highest index the primary announced while we followed it
        self._missing_since: float | None = now
        self._patience = max(takeover_after, STARTUP_GRACE)
        self.takeovers = 0
        self.yields = 0

    def observe(
        self, now: float, *, primary_connected: bool, primary_newest: int | None, own_newest: int | None
    ) -> Takeover | Yield | None:
        """What the swarm sees now: is the primary's session up, the newest index it announced on it, our newest."""
        if primary_connected:
            self._missing_since = None
            self._patience = self.takeover_after
        elif self._missing_since is None:
            self._missing_since = now
        if self.state is StandbyState.FOLLOWING:
            if primary_connected and primary_newest is not None:
                self.primary_newest = max(primary_newest, self.primary_newest or primary_newest)
            if self._missing_since is not None and now - self._missing_since >= self._patience:
                known = [i for i in (self.primary_newest, own_newest) if i is not None]
                self.state = StandbyState.ACTIVE
                self.takeovers += 1
                return Takeover(max(known) + 1 if known else None)
            return None
        if primary_connected and primary_newest is not None and (own_newest is None or primary_newest > own_newest):
            self.state = StandbyState.FOLLOWING
            self.primary_newest = primary_newest
            self.yields += 1
            return Yield(primary_newest)
        return None


def after_role_change(swarm: Swarm, role: Role, now: float) -> None:
    """Tell the peers what the swarm's new role means for them: a source asks nobody for pieces (requests it had
    out are dropped, and their pieces ignored should they still come), a follower asks again."""
    from swarmcast.swarm.core import Role  # noqa: PLC0415 - core imports this module

    for session in swarm.sessions.values():
        if role is Role.SOURCE:
            session.requests_out.clear()
            if session.sent_interested:
                session.sent_interested = False
                session.connection.send(NotInterested(), now)
        elif session.may_download and not session.sent_interested:
            session.sent_interested = True
            session.connection.send(Interested(), now)
        session.flush()
