"""Whom to dial: candidate addresses with backoff, and the addresses we never dial.

How this works. Candidates come from trackers, the operator (pinned: the source, --download-from) and PEX. Every
address handed out by ``to_dial`` counts as a failed attempt until a session with that address attaches
(``connected``): a refused connection, a timeout, an answer that is not our handshake, a goodbye right after it all
look the same from here, so nothing that is not our protocol lets an address be dialled again before its backoff
ends, whether or not the owner reports the failure. A candidate that is not pinned backs off fast (1 s, 4 s, 16 s,
then ``PEX_BACKOFF_MAX``) and after ``MAX_FAILURES`` attempts in a row is forgotten and remembered as dead for
``DEAD_TTL``, so a peer repeating it in PEX cannot put it back. One peer may name at most
``MAX_PEX_ADDRESSES_PER_PEER`` distinct addresses over its session; an address that cannot be a peer (port 0,
unspecified, multicast, broadcast or reserved IPs, our own) is never taken. Together: a PEX reflector makes us
open at most four connections per address in two minutes, to at most 100 addresses per hostile peer. (The
simulator, where full peers look like failures too, chose the figures: a slower start or a longer memory of
dead addresses left newcomers without peers.)

Start nodes (the transport file's ``startup_nodes``, a metatracker's answer) exist so that newcomers start fast.
While the swarm has not started (an engine whose players have not had a piece yet: ``starting``) they are dialled
first, right after pinned candidates, and may take the room of ``PREFERRED_EXTRA_PEERS`` beyond the target. Once
it has started they come last: dialled only when no ordinary candidate fills the room, so that a playing viewer
does not hold a start node's slot that the next newcomer needs (the start node drops long-served peers when full
anyway: node/startup.py). Support nodes and the source never count as starting.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Iterable

from swarmcast.swarm.config import SwarmConfig
from swarmcast.swarm.peer import Address

PREFERRED_EXTRA_PEERS = 2  # support nodes named by a source may be dialled this far beyond target_peers
MAX_FAILURES = 4  # attempts in a row before a candidate that is not pinned is forgotten
PEX_BACKOFF_MAX = 60.0  # seconds, for candidates that are not pinned
DEAD_TTL = 60.0  # seconds a forgotten address is not taken back (a full honest peer may have room by then)
MAX_DEAD = 4096  # dead addresses remembered (oldest forgotten first)
MAX_PEX_ADDRESSES_PER_PEER = 100  # distinct addresses one peer may name over its session
MAX_BANNED = 65536  # banned addresses (and, in core.py, peer ids) remembered; the oldest ban is forgotten first


def plausible_address(address: Address, own: set[Address] | None = None) -> bool:
    """Could a peer listen there? Rejects port 0, unspecified, multicast, broadcast and reserved IPs, and ``own``."""
    host, port = address
    if not 0 < port < 65536:
        return False
    octets = _dotted_quad(host)
    if octets is not None:  # what ipaddress decides for IPv4, without its parsing (6 % of a 10,000-peer sim)
        if octets[0] >= 224 or host == "0.0.0.0":  # multicast 224/4, reserved 240/4 (and broadcast), unspecified
            return False
        return own is None or address not in own
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:  # 255.255.255.255 is in the reserved 240/4
        return False
    return own is None or address not in own


def _dotted_quad(host: str) -> list[int] | None:
    """The four octets of a dotted-quad IPv4 address as ``ipaddress`` accepts it (decimal, no leading zeros, each at
    most 255), else None (another form, or not an address: the caller asks ``ipaddress``)."""
    parts = host.split(".")
    if len(parts) != 4:
        return None
    octets = []
    for part in parts:
        if not (0 < len(part) <= 3 and part.isascii() and part.isdigit()) or (part[0] == "0" and part != "0"):
            return None
        value = int(part)
        if value > 255:
            return None
        octets.append(value)
    return octets


class Candidate:
    # A plain class with slots: a node remembers up to max_candidates (500) of these, and a dataclass's instance
    # dict made each three times as big (a simulated peer's largest item after the ``have`` sets).
    __slots__ = ("failures", "next_try", "pinned", "preferred", "startup")

    def __init__(self) -> None:
        self.failures = 0  # attempts since the last session with it attached
        self.next_try = 0.0
        self.pinned = False  # an address we were told to use (source, --download-from): never forgotten
        self.preferred = False  # a support node a source pointed us to: dialled first, even with the peer set full
        self.startup = False  # a start node: dialled first while starting, last once started (module doc)


class Dialer:
    def __init__(self, config: SwarmConfig, rng: random.Random) -> None:
        self.candidates: dict[Address, Candidate] = {}
        self._max_candidates = config.max_candidates
        self._backoff_max = config.dial_backoff_max
        self._allowed = config.download_from
        self._rng = rng
        self._dead: OrderedDict[Address, float] = OrderedDict()  # address -> until
        self.own: set[Address] = set()  # addresses that turned out to be ourselves
        # Insertion-ordered, so that past MAX_BANNED the oldest ban is forgotten first.
        self.banned: dict[Address, None] = {}
        self._banned_ids: dict[bytes, None] = {}
        self.attempts = 0  # dial attempts handed out, for tests and status

    def add(self, addresses: Iterable[Address], *, now: float, pinned: bool = False, preferred: bool = False,
            startup: bool = False) -> None:
        for address in addresses:
            if address in self.banned or not plausible_address(address, self.own):
                continue
            if self._allowed is not None and address not in self._allowed:
                continue
            if not pinned and self._is_dead(address, now):
                continue
            candidate = self.candidates.get(address)
            if candidate is None:
                if len(self.candidates) >= self._max_candidates:
                    continue
                candidate = self.candidates[address] = Candidate()
            candidate.pinned = candidate.pinned or pinned
            candidate.preferred = candidate.preferred or preferred
            candidate.startup = candidate.startup or startup

    def allow(self, allowed: frozenset[Address] | None) -> None:
        """A new ``download_from`` (None: anyone): candidates outside it are forgotten, pinned or not."""
        self._allowed = allowed
        if allowed is not None:
            for address in [a for a in self.candidates if a not in allowed]:
                del self.candidates[address]

    def _is_dead(self, address: Address, now: float) -> bool:
        until = self._dead.get(address)
        if until is None:
            return False
        if until <= now:
            del self._dead[address]
            return False
        return True

    def _backoff(self, candidate: Candidate) -> float:
        if candidate.pinned:
            return min(self._backoff_max, 0.5 * 2.0 ** min(candidate.failures, 10))
        return min(PEX_BACKOFF_MAX, 4.0 ** max(0, min(candidate.failures - 1, 5)))

    def _attempted(self, address: Address, now: float) -> None:
        candidate = self.candidates[address]
        candidate.failures += 1
        candidate.next_try = now + self._backoff(candidate)
        self.attempts += 1

    def failed(self, address: Address, now: float) -> None:
        """The owner reports a failed dial or handshake: the attempt already counted; forget hopeless ones."""
        candidate = self.candidates.get(address)
        if candidate is None:
            return
        candidate.next_try = max(candidate.next_try, now + self._backoff(candidate))
        if candidate.failures >= MAX_FAILURES and not candidate.pinned:
            self.forget(address, now)

    def forget(self, address: Address, now: float) -> None:
        self.candidates.pop(address, None)
        self._dead[address] = now + DEAD_TTL
        self._dead.move_to_end(address)
        while len(self._dead) > MAX_DEAD:
            self._dead.popitem(last=False)

    def connected(self, address: Address) -> None:
        candidate = self.candidates.get(address)
        if candidate is not None:
            candidate.failures = 0

    def is_self(self, address: Address) -> None:
        """We dialled ourselves (the peer id came back): never again."""
        self.candidates.pop(address, None)
        self.own.add(address)

    def ban(self, peer_id: bytes, address: Address) -> None:
        """Banned by peer id, and by address when it listens (port 0 names nobody)."""
        self._banned_ids[peer_id] = None
        if len(self._banned_ids) > MAX_BANNED:
            del self._banned_ids[next(iter(self._banned_ids))]
        if address[1] > 0:
            self.banned[address] = None
            if len(self.banned) > MAX_BANNED:
                del self.banned[next(iter(self.banned))]
        self.candidates.pop(address, None)

    def is_banned(self, peer_id: bytes, address: Address) -> bool:
        return peer_id in self._banned_ids or address in self.banned

    @staticmethod
    def named_by(named: set[Address], peers: Iterable[Address]) -> list[Address]:
        """The addresses of a PEX a peer may still make us consider: ``named`` (its set so far) stays within
        MAX_PEX_ADDRESSES_PER_PEER distinct addresses."""
        taken = []
        for address in peers:
            if address not in named:
                if len(named) >= MAX_PEX_ADDRESSES_PER_PEER:
                    continue
                named.add(address)
            taken.append(address)
        return taken

    def to_dial(self, now: float, *, room: int, connected: set[Address], connecting: set[Address],
                starting: bool = False) -> list[Address]:
        """Candidates worth an attempt now; each one handed out counts as an attempt (see the module doc).

        ``starting``: the swarm has not started playing yet, so start nodes go first."""
        # Forget the candidates that failed too often without the owner saying so (a handshake that went wrong).
        for address in [a for a, c in self.candidates.items() if not c.pinned and c.failures >= MAX_FAILURES]:
            if self.candidates[address].next_try <= now and address not in connecting and address not in connected:
                self.forget(address, now)
        busy = connected | connecting
        ready = [(a, c) for a, c in self.candidates.items() if a not in busy and c.next_try <= now]
        chosen: list[Address] = [a for a, c in ready if c.pinned]
        startup = [a for a, c in ready if c.startup and not c.pinned]
        self._rng.shuffle(startup)
        extra_room = max(0, room + PREFERRED_EXTRA_PEERS)
        if starting:
            # A newcomer: start nodes are there for it, before anyone else.
            extra = startup[:extra_room]
            chosen.extend(extra)
            room -= len(extra)
            extra_room -= len(extra)
        # Support nodes a source named: a viewer the source will not serve needs one, whatever else it has.
        preferred = [a for a, c in ready if c.preferred and not c.pinned and not (starting and c.startup)]
        self._rng.shuffle(preferred)
        extra = preferred[:extra_room]
        chosen.extend(extra)
        room -= len(extra)
        if room > 0:
            others = [a for a, c in ready if not c.pinned and not c.preferred and not c.startup]
            self._rng.shuffle(others)
            chosen.extend(others[:room])
            room -= len(others[:room])
        if not starting and room > 0:
            # Started: a start node only when nobody else is left to dial.
            chosen.extend([a for a in startup if not self.candidates[a].preferred][:room])
        for address in chosen:
            self._attempted(address, now)
        return chosen
