"""The engine's control endpoints for ``swarmcast ctl`` (and scripts): its sessions and its upload settings.

- ``GET /app/sessions``: every broadcast the engine holds with its figures, every playback session
  (``format=json``), and the settings in force. Session ids are capabilities (a playback URL holds one), so a
  browser request made by another site's page is refused (403), as every write is.
- ``GET /app/settings``: ``{"upload_slots", "upload_limit" (KB/s, 0 = none), "max_peers"}``.
- ``POST /app/settings`` with a JSON object holding any of those keys: the new settings, in force at once on every
  joined broadcast and on those joined later (until the engine stops). A write is taken only from this machine
  (127.0.0.1, ::1, or the address it arrived at: node/webaccess.py's rule without --monitor-node-ip), only as
  ``Content-Type: application/json`` (a cross-origin page cannot send that without a CORS preflight, which the
  engine does not grant) and never from a browser request another site made (Sec-Fetch-Site). Every value is
  checked before anything changes; a bad one is a 400 whose error starts with its name.

Starting and stopping sessions are the playback API's own ``/ace/getstream?format=json`` and
``/ace/cmd/<infohash>/<session>?method=stop``. The answers are in the API's shape: ``{"response": ..., "error": ...}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from aiohttp import web

from swarmcast.http.node_api import MAX_PEERS_LIMIT, MAX_UPLOAD_LIMIT_KBPS, MAX_UPLOAD_SLOTS_LIMIT, cross_site
from swarmcast.metrics.collectors import peer_role
from swarmcast.node.webaccess import WebAccess

if TYPE_CHECKING:
    from swarmcast.node.engine import Engine, EngineBroadcast

MAX_SETTINGS_BODY = 4096  # bytes of a POST /app/settings body
SETTINGS = {"upload_slots": (0, MAX_UPLOAD_SLOTS_LIMIT), "upload_limit": (0, MAX_UPLOAD_LIMIT_KBPS),
            "max_peers": (1, MAX_PEERS_LIMIT)}  # fmt: skip
_NO_STORE = {"Cache-Control": "no-store"}
_LOCAL_ONLY = WebAccess.local_only()


def _answer(response: object, status: int = 200) -> web.Response:
    error = response if status >= 400 else None
    return web.json_response({"response": None if error else response, "error": error}, status=status,
                             headers=_NO_STORE)  # fmt: skip


def engine_settings(engine: Engine) -> dict[str, int]:
    config = engine.config
    return {"upload_slots": config.upload_slots, "upload_limit": config.upload_limit // 1000,
            "max_peers": config.max_peers}  # fmt: skip


def parse_settings(body: object) -> dict[str, int]:
    """The settings of a POST body; ValueError naming the first bad key."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object such as {\"upload_slots\": 4}")  # noqa: TRY004 - a 400
    out: dict[str, int] = {}
    for key, value in body.items():
        if key not in SETTINGS:
            raise ValueError(f"{str(key)[:40]}: unknown setting (known: {', '.join(SETTINGS)})")
        low, high = SETTINGS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{key}: {json.dumps(value)[:40]} is not a whole number in {low}..{high}")
        out[key] = value
    return out


def apply_settings(engine: Engine, settings: dict[str, int], now: float) -> dict[str, int]:
    """New upload settings for the broadcasts joined now and later; returns the settings in force."""
    limit = settings.get("upload_limit")
    engine.config = replace(
        engine.config,
        upload_slots=settings.get("upload_slots", engine.config.upload_slots),
        upload_limit=engine.config.upload_limit if limit is None else limit * 1000,
        max_peers=settings.get("max_peers", engine.config.max_peers),
    )
    for broadcast in engine.broadcasts.values():
        broadcast.swarm.reconfigure(
            now, max_peers=settings.get("max_peers"), upload_slots=settings.get("upload_slots"),
            upload_limit=None if limit is None else limit * 1000,
        )  # fmt: skip
    return engine_settings(engine)


def _broadcast(broadcast: EngineBroadcast, sessions: int, now: float) -> dict[str, object]:
    swarm, stats = broadcast.swarm, broadcast.swarm.stats
    roles = {"source": 0, "support": 0, "viewer": 0}
    for session in swarm.sessions.values():
        roles[peer_role(session)] += 1
    startup = broadcast.startup_seconds
    return {
        "infohash": broadcast.infohash,
        "title": swarm.descriptor.title if swarm.descriptor is not None else None,
        "state": broadcast.state.value,
        "players": broadcast.players,
        "sessions": sessions,
        "peers": len(swarm.sessions),
        "peers_by_role": roles,
        "download_speed": round(stats.down.rate(now)),
        "upload_speed": round(stats.up.rate(now)),
        "downloaded": stats.downloaded,
        "uploaded": stats.uploaded,
        "delivered": broadcast.delivered,
        "upload_slots_used": swarm.choker.in_use(),
        "cache_bytes": swarm.store.size_bytes,
        "delay": round(broadcast.source_clock.delay, 3) if broadcast.source_clock is not None else None,
        "startups": startup.count,
        "startup_mean": round(startup.sum / startup.count, 3) if startup.count else None,
        "joined_for": round(now - broadcast.joined, 1),
    }


async def read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, None past ``limit`` bytes. ``content.read(n)`` returns what has arrived so far, up to n: a
    body sent in pieces (or a slow client) is read to its end, never past the bound (a lying or absent
    Content-Length included)."""
    data = bytearray()
    while chunk := await request.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _refused(request: web.Request, *, write: bool) -> web.Response | None:
    if cross_site(request):
        return _answer("a cross-site request may not use the control endpoints", 403)
    if write:
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        if not _LOCAL_ONLY.allows(request.remote or "", str(local[0]) if local else ""):
            return _answer("settings may be changed from this machine only", 403)
    return None


def add_ctl_routes(app: web.Application, engine: Engine) -> None:
    """``/app/sessions`` and ``/app/settings`` on the engine's playback API."""

    async def sessions(request: web.Request) -> web.Response:
        refused = _refused(request, write=False)
        if refused is not None:
            return refused
        now = time.monotonic()
        counts: dict[str, int] = {}
        listed = []
        for session in engine.sessions.values():
            infohash = session.broadcast.infohash
            counts[infohash] = counts.get(infohash, 0) + 1
            listed.append({"session_id": session.session_id, "infohash": infohash, "players": session.players,
                           "age": round(now - session.created, 1), "idle": round(now - session.last_used, 1)})
        broadcasts = [_broadcast(b, counts.get(b.infohash, 0), now) for b in engine.broadcasts.values()]
        return _answer({"broadcasts": broadcasts, "sessions": listed, "streams": engine.streams.total,
                        "settings": engine_settings(engine)})  # fmt: skip

    async def get_settings(request: web.Request) -> web.Response:
        refused = _refused(request, write=False)
        return refused if refused is not None else _answer(engine_settings(engine))

    async def post_settings(request: web.Request) -> web.Response:
        refused = _refused(request, write=True)
        if refused is not None:
            return refused
        if request.content_type != "application/json":
            return _answer("the body must be sent as Content-Type: application/json", 415)
        if request.content_length is not None and request.content_length > MAX_SETTINGS_BODY:
            return _answer(f"the body is over {MAX_SETTINGS_BODY} bytes", 413)
        raw = await read_body(request, MAX_SETTINGS_BODY)
        if raw is None:
            return _answer(f"the body is over {MAX_SETTINGS_BODY} bytes", 413)
        try:
            settings = parse_settings(json.loads(raw))
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            message = str(error) if not isinstance(error, json.JSONDecodeError) else f"not JSON: {error}"
            return _answer(message[:300], 400)
        return _answer(apply_settings(engine, settings, time.monotonic()))

    app.router.add_get("/app/sessions", sessions)
    app.router.add_get("/app/settings", get_settings)
    app.router.add_post("/app/settings", post_settings)
