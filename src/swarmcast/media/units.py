"""Parsing of the human-friendly quantities used on command lines and in configs.

Both parsers raise ``ValueError`` with a message that quotes the bad text; argparse wrappers turn it into an
error naming the flag.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

# Decimal multipliers, as in every encoder's "-b:v 2M": bitrates are SI, not binary.
_BITRATE_SUFFIXES: Final = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_BITRATE_RE: Final = re.compile(
    r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<suffix>[kmg]?)(?:bps|b/s)?", re.IGNORECASE | re.ASCII
)
MAX_BITRATE: Final = 100_000_000_000
MIN_BITRATE: Final = 200_000  # of the test signal: below this the encoder cannot keep a picture
MAX_FPS: Final = 120
MAX_DIMENSION: Final = 16384  # FFmpeg's own limit for most encoders
_SIZE_RE: Final = re.compile(r"(\d+)\s*[xX×]\s*(\d+)", re.ASCII)


def parse_bitrate(text: str) -> int:
    """Bits per second from ``"2M"``, ``"500k"``, ``"1.5M"``, ``"1500000"`` (case-insensitive suffix)."""
    match = _BITRATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid bitrate {text!r}: expected a number with an optional k/M/G suffix, e.g. 2M")
    try:
        value = Decimal(match["number"]) * _BITRATE_SUFFIXES[match["suffix"].lower()]
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits valid decimals
        raise ValueError(f"invalid bitrate {text!r}") from exc
    bits = int(value)
    if bits != value:
        raise ValueError(f"invalid bitrate {text!r}: not a whole number of bits per second")
    if not 0 < bits <= MAX_BITRATE:
        raise ValueError(f"invalid bitrate {text!r}: must be between 1 and {MAX_BITRATE} bits/s")
    return bits


def parse_size(text: str) -> tuple[int, int]:
    """``(width, height)`` from ``"640x360"``."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. 640x360")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ValueError(f"invalid size {text!r}: width and height must be between 1 and {MAX_DIMENSION}")
    return width, height
