"""Logging in the Ace Stream engine's shape, so existing log scrapers keep working.

    2026-11-20 11:03:08,162|MainThread|module|message

The Ace Stream log options map as follows: ``--log-file`` (else stderr), ``--log-max-size`` and
``--log-backup-count`` (the file rotates: ``L``, ``L.1`` ... ``L.N``), ``--log-debug N`` (N > 0 = debug level),
``--log-modules NAME:LEVEL,...`` (a level per logger; ``root`` = everything) and any ``--debug-*`` switch (debug
level: our modules have no per-topic switches, so every switch turns on all of our debug messages).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from dataclasses import dataclass
from pathlib import Path

LOG_FORMAT = "%(asctime)s|%(threadName)s|%(name)s|%(message)s"

# Ace Stream's one-letter levels (``root:D``) and the full names.
LEVELS = {
    "D": logging.DEBUG, "DEBUG": logging.DEBUG,
    "I": logging.INFO, "INFO": logging.INFO,
    "W": logging.WARNING, "WARNING": logging.WARNING, "WARN": logging.WARNING,
    "E": logging.ERROR, "ERROR": logging.ERROR,
    "C": logging.CRITICAL, "CRITICAL": logging.CRITICAL,
}  # fmt: skip
MAX_LOG_MODULES = 64  # entries of --log-modules; more is a typo, not a configuration
DEFAULT_LOG_MAX_SIZE = 10_000_000  # bytes: the log file rotates past this size (0 = never)
DEFAULT_LOG_BACKUP_COUNT = 1  # rotated files kept besides the current one


def parse_log_modules(text: str) -> tuple[tuple[str, int], ...]:
    """``NAME:LEVEL[,NAME:LEVEL...]`` (also space separated) into (logger name, level) pairs; ValueError names the
    bad entry. ``root`` is the root logger, so ``root:D`` turns on debug messages of every module."""
    entries = [part for chunk in text.split(",") for part in chunk.split()]
    if not entries:
        raise ValueError(f"{text!r} names no module (expected NAME:LEVEL, e.g. root:D)")
    if len(entries) > MAX_LOG_MODULES:
        raise ValueError(f"{len(entries)} entries, more than {MAX_LOG_MODULES}")
    pairs: list[tuple[str, int]] = []
    for entry in entries:
        name, sep, level_text = entry.rpartition(":")
        level = LEVELS.get(level_text.upper())
        if not sep or not name or level is None:
            allowed = "D, I, W, E, C"
            raise ValueError(f"{entry!r} is not NAME:LEVEL with LEVEL one of {allowed} (e.g. root:D)")
        pairs.append((name, level))
    return tuple(pairs)


@dataclass(frozen=True)
class LogConfig:
    log_file: Path | None = None  # None = stderr
    verbose: bool = False  # debug level for every logger
    modules: tuple[tuple[str, int], ...] = ()  # per-logger levels, applied after ``verbose``
    max_bytes: int = 0  # rotate the log file past this size; 0 = never
    backup_count: int = 0  # rotated files kept


def setup_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    """Send every swarmcast log record to stderr, or to ``log_file`` when given (no rotation)."""
    configure_logging(LogConfig(log_file=log_file, verbose=verbose))


def configure_logging(config: LogConfig) -> None:
    handler: logging.Handler
    if config.log_file is not None:
        # RotatingFileHandler with max_bytes 0 never rotates: a plain append to the file.
        handler = logging.handlers.RotatingFileHandler(
            config.log_file, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if config.verbose else logging.INFO)
    # aiohttp's access log would drown the engine's own messages.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name, level in config.modules:
        (root if name == "root" else logging.getLogger(name)).setLevel(level)
