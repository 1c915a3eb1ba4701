"""What every part of the registry's web application shares: the database, the write token and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from swarmcast.registry.db import Database

DEFAULT_PORT = 8620
HEARTBEAT_INTERVAL = 5.0  # seconds between a node's heartbeats (told to it when it registers)
DEFAULT_HEARTBEAT_TIMEOUT = 15.0  # a node silent this long is marked gone
DEFAULT_RETENTION = 3600.0  # seconds of heartbeat samples kept for the charts
MAX_SAMPLES = 200_000  # and never more rows than this, whatever the retention


@dataclass(frozen=True)
class RegistrySettings:
    state_dir: Path
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    retention: float = DEFAULT_RETENTION
    max_samples: int = MAX_SAMPLES


@dataclass
class RegistryState:
    db: Database
    token: str  # the admin (fleet) token: controller and admin routes, and the node routes too
    settings: RegistrySettings
    node_token: str | None = None  # the nodes' token: /api/nodes* writes and POST /api/streams only (auth.py)
    extras: dict[str, object] = field(default_factory=dict)  # per-part state (controller key box, ...)


STATE_KEY = web.AppKey("registry_state", RegistryState)  # app[STATE_KEY]: the state every route module shares
