"""Errors of the peer protocol, split by who is at fault.

A peer's misbehaviour is a ``ProtocolError``: the connection is closed and the peer banned. Our own misuse of
the API (sending before a handshake, say) is an ordinary exception: it is a bug, and it should crash loudly.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    BAD_HANDSHAKE = 1
    FRAME_TOO_LARGE = 2
    MALFORMED_MESSAGE = 3
    UNKNOWN_MESSAGE = 4
    UNEXPECTED_MESSAGE = 5
    BAD_SIGNATURE = 6
    REQUEST_OUTSIDE_WINDOW = 7
    WRONG_CONTENT = 8
    BAD_METADATA = 9
    TIMEOUT = 10
    TOO_SLOW = 11
    IMPLAUSIBLE_INDEX = 12  # a piece index no honest peer could hold (far past the live edge)
    FLOOD = 13  # more messages of a kind than any honest peer sends, or requests far past the cap


class ProtocolError(Exception):
    """The remote peer broke the protocol. Carries a code so callers can count and log by kind."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail
