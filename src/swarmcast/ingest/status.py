"""What the source node knows of its input, for the monitor (/app/monitor's ``source_status``) and the log."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InputStatus:
    """Updated by the ingest loop as the input comes and goes; read by the web interface."""

    url: str
    connected: bool = False
    reconnects: int = 0  # times the input was reached again after it had been lost
    attempts: int = 0  # failed attempts in the current outage
    last_error: str | None = None  # why the last attempt failed or the input was dropped (e.g. "not MPEG-TS")
    last_error_at: float | None = None  # Unix time of last_error
    bytes_received: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "bytes_received": self.bytes_received,
        }
