"""Per-peer message budgets: one token bucket per message kind; a peer that overdraws one is dropped.

Every message costs us something (a set insertion for a HAVE, a scan for a WINDOW, candidates for a PEX, a whole
descriptor sent back for a METADATA_REQUEST), and a peer can send thousands in one TCP read. An honest peer sends
a HAVE per piece (5 a second at our 0.2 s pieces, a burst of up to a window when it catches up), a WINDOW and a
METADATA_REQUEST once, a PEX every 20 s, a KEEPALIVE every 15 s of silence, REQUESTs and CANCELs bounded by the
requests it may have outstanding. The allowances below are ten times that or more; beyond them the peer is not
honest and nothing it says is worth reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmcast.wire.messages import (
    Cancel,
    Choke,
    CredentialMessage,
    Have,
    Interested,
    KeepAlive,
    Message,
    Metadata,
    MetadataRequest,
    NotInterested,
    Pex,
    Piece,
    Reject,
    Request,
    Unchoke,
    Window,
)


@dataclass(frozen=True)
class Allowance:
    burst: float  # messages it may send at once
    rate: float  # messages per second, sustained


ALLOWANCES: dict[type, Allowance] = {
    Have: Allowance(2048, 100),
    Window: Allowance(4, 0.1),
    Pex: Allowance(4, 0.1),
    MetadataRequest: Allowance(4, 0.1),
    Metadata: Allowance(4, 0.1),
    KeepAlive: Allowance(8, 1),
    Interested: Allowance(16, 2),
    NotInterested: Allowance(16, 2),
    Choke: Allowance(16, 2),
    Unchoke: Allowance(16, 2),
    Request: Allowance(512, 100),
    Cancel: Allowance(512, 100),
    Reject: Allowance(512, 100),
    Piece: Allowance(512, 100),
    # A PRESENT and a GRANT at attach, then one of each per refresh (half the credential's lifetime).
    CredentialMessage: Allowance(8, 0.1),
}


TRANSFER_KINDS = (Request, Cancel, Reject, Piece)
DEFAULT_TRANSFER_RATE = ALLOWANCES[Request].rate


class MessageBudget:
    """Token buckets, filled lazily: a kind's bucket exists once the peer sent that kind.

    ``transfer_rate`` (per second) replaces the allowance of the piece-moving kinds (REQUEST, CANCEL, REJECT, PIECE):
    the default fits a live stream twenty times over; a node that serves bulk transfers (bench/fanout.py measures
    raw serving capacity) raises it, and the per-peer queue caps (upload.py) still bound what a request can cost."""

    __slots__ = ("_allowances", "_levels")

    def __init__(self, now: float, *, transfer_rate: float = DEFAULT_TRANSFER_RATE) -> None:
        del now  # buckets start full when first used
        # kind -> [tokens, at, burst, rate]: updated in place (one charge per received message, the hot path).
        self._levels: dict[type, list[float]] = {}
        self._allowances = ALLOWANCES
        if transfer_rate != DEFAULT_TRANSFER_RATE:
            scaled = Allowance(max(ALLOWANCES[Request].burst, 5 * transfer_rate), transfer_rate)
            self._allowances = {**ALLOWANCES, **dict.fromkeys(TRANSFER_KINDS, scaled)}

    def charge(self, message: Message, now: float) -> bool:
        """Take one token for this message; False when the peer has overdrawn that kind's allowance."""
        kind = type(message)
        level = self._levels.get(kind)
        if level is None:
            allowance = self._allowances.get(kind)
            if allowance is None:
                return True
            level = self._levels[kind] = [allowance.burst, now, allowance.burst, allowance.rate]
        # min(burst, tokens + max(0, now - at) * rate) - 1, written out (the builtins cost more than the sum).
        elapsed = now - level[1]
        tokens = level[0] + (elapsed if elapsed > 0.0 else 0.0) * level[3]
        burst = level[2]
        tokens = (tokens if tokens < burst else burst) - 1.0
        level[0] = tokens
        level[1] = now
        return tokens >= 0.0
