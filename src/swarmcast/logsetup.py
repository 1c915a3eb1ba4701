"""Logging in the Ace Stream engine's shape, so existing log scrapers keep working.

    2026-11-20 11:03:08,162|MainThread|module|message
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s|%(threadName)s|%(name)s|%(message)s"


def setup_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    """Send every swarmcast log record to stderr, or to ``log_file`` when given."""
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp's access log would drown the engine's own messages.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
