"""The fleet's controller, served by the registry: streaming-utils' endpoints plus an admin API to fill them.

How this works. ``swarmcast fleet`` on each server names these URLs in its ``controller`` section (docs/fleet.md):

- ``GET /controller/source_node[?get_metadata]`` and ``GET /controller/support_node``: ``{"result": [...]}``, the
  list stored for the requesting server (the request's peer address, or ``?server=IP`` when given), else the
  ``default`` list; ``{"error": "..."}`` when neither is stored (the fleet then aborts and stops nothing, where an
  empty list would stop every node). ``get_metadata`` adds each stream's stored key and piece number.
- ``POST /controller/monitor``: one node's monitor JSON with ``port`` and ``type`` (monitor_nodes.py sends it
  form-encoded, so the body is read as JSON whatever its Content-Type), kept as a time series.
- ``POST /controller/metadata``: ``{"<name>": {"last_seq": N, "private_key": "<.sauth>"}}``, keys sealed at rest.

streaming-utils' own controller paths (``/source_node/get_config.php``, ``/support_node/get_config.php``,
``/monitor/data_receiver.php``, ``/source_node/post_data.php``) answer the same, so a config moves by changing the
host. Every controller and admin route needs the admin token, ``--token`` (``Authorization: Bearer T``, ``X-Token: T``,
or ``?token=T`` since a fleet can only put it in its URLs); the node token is refused here (auth.py): the lists hold
ingest URLs, and keys leave only this way.
Keys are never logged or put in an error; requests are logged by path, never with their query (the token).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import Connection

from swarmcast.registry import controller_store as store
from swarmcast.registry.auth import admin_authorized
from swarmcast.registry.keys import DEFAULT_KEY_FILE, KeyBox, KeyFileError, SealError, load_or_create
from swarmcast.registry.state import RegistryState

log = logging.getLogger("swarmcast.registry.controller")

EXTRA = "controller"  # RegistryState.extras key
DEFAULT_MONITOR_RETENTION = 86_400.0  # seconds of pushed monitors kept
DEFAULT_MONITOR_MAX_ROWS = 100_000
DEFAULT_MONITOR_MAX_BYTES = 64 * 1024 * 1024  # JSON bytes of kept monitors, summed
MAX_MONITOR_BODY = 256 * 1024  # one node's monitor (its peer list included)
MAX_BODY = 1024 * 1024  # a list or a metadata push
MAX_MONITOR_WAITING = 16  # monitor posts queued for the database at once; past it 503
PRUNE_INTERVAL = 10.0  # seconds between age prunes when no cap is reached
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines about requests without the token
NO_STORE = {"Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ControllerSettings:
    key_file: Path | None = None  # None: <state-dir>/registry.key
    monitor_retention: float = DEFAULT_MONITOR_RETENTION
    monitor_max_rows: int = DEFAULT_MONITOR_MAX_ROWS
    monitor_max_bytes: int = DEFAULT_MONITOR_MAX_BYTES


class Controller:
    """The controller's state in one registry process: the key box and the monitoring table's bounds."""

    def __init__(self, state: RegistryState, box: KeyBox, settings: ControllerSettings) -> None:
        self.state = state
        self.box = box
        self.settings = settings
        self.limits = store.MonitorLimits(settings.monitor_retention, settings.monitor_max_rows,
                                          settings.monitor_max_bytes)  # fmt: skip
        self._totals: tuple[int, int] | None = None  # (rows, bytes) in the monitoring table, None until counted
        self._pruned_at = 0.0
        self._monitor_lock = asyncio.Lock()  # check-and-insert is one step: the caps hold under a flood
        self._monitor_waiting = 0

    async def add_monitor(self, server: str, body: dict[str, object], size: int) -> None:
        if self._monitor_waiting >= MAX_MONITOR_WAITING:
            raise store.RefusedError(503, "too many monitor posts at once; try again")
        self._monitor_waiting += 1
        try:
            async with self._monitor_lock:
                now = time.time()
                rows, total = self._totals or (0, 0)
                prune = (self._totals is None or rows + 1 > self.limits.max_rows
                         or total + size > self.limits.max_bytes or now - self._pruned_at >= PRUNE_INTERVAL)

                def write(conn: Connection) -> tuple[int, int] | None:
                    store.add_monitor(conn, server, body, size, now)
                    return store.prune_monitor(conn, self.limits, now) if prune else None

                counted = await self.state.db.run(write)
                if counted is None:
                    self._totals = (rows + 1, total + size)
                else:
                    self._totals, self._pruned_at = counted, now
        finally:
            self._monitor_waiting -= 1


class RefusalLog:
    """Requests without the token, logged by path (never the query: it may hold a token), one line per
    ``REFUSAL_LOG_INTERVAL`` at most with a count of the others, so a flood of them cannot fill the log."""

    def __init__(self) -> None:
        self._logged_at: float | None = None
        self._quiet = 0

    def note(self, request: web.Request, now: float) -> None:
        if self._logged_at is not None and now - self._logged_at < REFUSAL_LOG_INTERVAL:
            self._quiet += 1
            return
        more = f" ({self._quiet} more refused since the last such line)" if self._quiet else ""
        # raw_path is still percent-encoded: a %0A in the URL cannot start a forged log line.
        log.warning("controller: %s %s from %s: bad or missing token%s", request.method,
                    request.raw_path.split("?", 1)[0][:200], request.remote, more)  # fmt: skip
        self._logged_at, self._quiet = now, 0


def prepare(state: RegistryState, settings: ControllerSettings | None = None) -> Controller:
    """Load (or create) the key file and refuse one that did not seal the stored keys. KeyFileError: one line."""
    settings = settings or ControllerSettings()
    path = settings.key_file or state.settings.state_dir / DEFAULT_KEY_FILE
    box = load_or_create(path)
    with state.db.engine.begin() as conn:
        foreign = store.foreign_key_ids(conn, box)
    if foreign:
        count = sum(foreign.values())
        raise KeyFileError(f"--key-file {path}: key id {box.key_id} did not seal the {count} stored stream key(s) "
                           f"(sealed by key id {', '.join(sorted(foreign))}): start with that key file")  # fmt: skip
    controller = Controller(state, box, settings)
    state.extras[EXTRA] = controller
    return controller


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=NO_STORE)


def _answer(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=NO_STORE)


def _requesting_server(request: web.Request) -> str:
    """Who asks: ``?server=IP`` when given (a fleet behind a proxy, or asking for another server), else the peer."""
    given = request.query.get("server")
    try:
        return store.server_name(given if given else (request.remote or ""))
    except ValueError:
        shown = (given or request.remote or "")[:64]
        raise store.RefusedError(400, f"server: {shown!r} is not an IP address") from None


async def _read_json(request: web.Request, limit: int) -> object:
    if request.content_length is not None and request.content_length > limit:
        raise store.RefusedError(413, f"the body is over {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise store.RefusedError(413, f"the body is over {limit} bytes")
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested past the stack
        raise store.RefusedError(400, "the body is not JSON") from None


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in store.KINDS:
        raise store.RefusedError(404, f"{kind[:40]!r} is not source_node or support_node")
    return kind


def _server(request: web.Request) -> str:
    try:
        return store.server_name(request.match_info["server"])
    except ValueError:
        shown = request.match_info["server"][:64]
        raise store.RefusedError(400, f"{shown!r} is not an IP address or default") from None


def _port(request: web.Request) -> int:
    text = request.match_info["port"]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise store.RefusedError(400, f"{text[:16]!r} is not a port")
    return int(text)


def add_routes(app: web.Application, state: RegistryState) -> None:
    found = state.extras.get(EXTRA)
    ctl = found if isinstance(found, Controller) else prepare(state)
    db = state.db

    refusals = RefusalLog()

    def guarded(handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            if not admin_authorized(request, state.token):
                refusals.note(request, time.monotonic())
                return _error(401, "bad or missing token")
            try:
                return await handler(request)
            except store.RefusedError as refused:
                extra = {"problems": refused.problems[:50]} if refused.problems else {}
                return _error(refused.status, str(refused), **extra)
            except SealError as error:
                log.error("controller: %s", error)  # names the stream, never the key
                return _error(500, str(error))

        return check

    # ---- streaming-utils' endpoints ----

    async def stream_list(request: web.Request, kind: str) -> web.Response:
        server = _requesting_server(request)
        get_metadata = kind == "source_node" and "get_metadata" in request.query

        def read(conn: Connection) -> tuple[str, list[dict[str, object]]] | None:
            picked = store.pick_list(conn, kind, server)
            if picked is not None and get_metadata:
                return picked[0], store.with_metadata(conn, ctl.box, picked[1])
            return picked

        picked = await db.run(read)
        if picked is None:
            # 200 with an error, as streaming-utils' controller answers: the fleet aborts with this message.
            return _answer({"error": f"no {kind} list for {server} and no default list in the registry"})
        if get_metadata:
            handed = sorted(str(e["stream_uid"]) for e in picked[1] if "metadata" in e)
            log.info("controller: %s list (%s) with the keys of %s handed to %s", kind, picked[0],
                     ", ".join(handed) or "no stream", request.remote)  # fmt: skip
        return _answer({"result": picked[1]})

    async def source_node(request: web.Request) -> web.Response:
        return await stream_list(request, "source_node")

    async def support_node(request: web.Request) -> web.Response:
        return await stream_list(request, "support_node")

    async def monitor(request: web.Request) -> web.Response:
        body = await _read_json(request, MAX_MONITOR_BODY)
        store.check_monitor(body)
        assert isinstance(body, dict)
        await ctl.add_monitor(_requesting_server(request), body, store.json_size(body))
        return _answer({"result": "ok"})

    async def metadata(request: web.Request) -> web.Response:
        checked = store.check_metadata(await _read_json(request, MAX_BODY))
        await db.run(lambda conn: store.store_metadata(conn, ctl.box, checked, time.time()))
        log.info("controller: metadata stored for %d stream(s): %s", len(checked), ", ".join(sorted(checked)))
        return _answer({"result": {"stored": sorted(checked)}})

    for path in ("/controller/source_node", "/source_node/get_config.php"):
        app.router.add_get(path, guarded(source_node))
    for path in ("/controller/support_node", "/support_node/get_config.php"):
        app.router.add_get(path, guarded(support_node))
    for path in ("/controller/monitor", "/monitor/data_receiver.php"):
        app.router.add_post(path, guarded(monitor))
    for path in ("/controller/metadata", "/source_node/post_data.php"):
        app.router.add_post(path, guarded(metadata))

    # ---- the admin API (docs/registry.md) ----

    async def lists(request: web.Request) -> web.Response:
        return _answer({"lists": await db.run(store.all_lists)})

    async def get_list(request: web.Request) -> web.Response:
        kind, server = _kind(request), _server(request)
        entries = await db.run(lambda conn: store.stored_list(conn, kind, server))
        if entries is None:
            return _error(404, f"no {kind} list for {server}")
        return _answer({"kind": kind, "server": server, "entries": entries})

    async def put_list(request: web.Request) -> web.Response:
        kind, server = _kind(request), _server(request)
        body = await _read_json(request, MAX_BODY)
        keys = await db.run(lambda conn: store.put_list(conn, ctl.box, kind, server, body, time.time()))
        count = len(body) if isinstance(body, list) else 0
        log.info("controller: %s list for %s stored (%d entries%s)", kind, server, count,
                 f"; keys of {', '.join(keys)} sealed" if keys else "")  # fmt: skip
        return _answer({"kind": kind, "server": server, "entries": count, "keys_stored": keys})

    async def delete_list(request: web.Request) -> web.Response:
        kind, server = _kind(request), _server(request)
        if not await db.run(lambda conn: store.delete_list(conn, kind, server)):
            return _error(404, f"no {kind} list for {server}")
        log.info("controller: %s list for %s deleted", kind, server)
        return web.Response(status=204, headers=NO_STORE)

    async def put_entry(request: web.Request) -> web.Response:
        kind, server, node_port = _kind(request), _server(request), _port(request)
        body = await _read_json(request, MAX_BODY)
        keys = await db.run(lambda conn: store.put_entry(conn, ctl.box, kind, server, node_port, body, time.time()))
        log.info("controller: %s entry %d for %s stored", kind, node_port, server)
        return _answer({"kind": kind, "server": server, "port": node_port, "keys_stored": keys})

    async def delete_entry(request: web.Request) -> web.Response:
        kind, server, node_port = _kind(request), _server(request), _port(request)
        if not await db.run(lambda conn: store.delete_entry(conn, ctl.box, kind, server, node_port, time.time())):
            return _error(404, f"no {kind} entry {node_port} for {server}")
        log.info("controller: %s entry %d for %s deleted", kind, node_port, server)
        return web.Response(status=204, headers=NO_STORE)

    async def keys(request: web.Request) -> web.Response:
        return _answer({"keys": await db.run(store.list_keys)})

    async def get_key(request: web.Request) -> web.Response:
        name = store.key_name(request.match_info["name"])
        found = await db.run(lambda conn: store.open_keys(conn, ctl.box, [name]))
        if name not in found:
            return _error(404, f"no key stored for {name[:64]!r}")
        log.info("controller: the key of %s handed to %s", name, request.remote)
        return _answer({"name": name, "last_seq": found[name][0], "private_key": found[name][1]})

    async def delete_key(request: web.Request) -> web.Response:
        name = store.key_name(request.match_info["name"])
        if not await db.run(lambda conn: store.delete_key(conn, name)):
            return _error(404, f"no key stored for {name[:64]!r}")
        log.info("controller: the key of %s deleted", name)
        return web.Response(status=204, headers=NO_STORE)

    async def monitors(request: web.Request) -> web.Response:
        return _answer({"nodes": await db.run(store.monitor_latest)})

    async def monitor_series(request: web.Request) -> web.Response:
        server, node_port = _server(request), _port(request)
        text = request.query.get("seconds", "3600")
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= 10 * 365 * 86400:
            return _error(400, f"seconds: {text[:20]!r} is not a positive number of seconds")
        since = time.time() - seconds
        return _answer(await db.run(lambda conn: store.monitor_series(conn, server, node_port, since)))

    app.router.add_get("/api/controller/lists", guarded(lists))
    app.router.add_get("/api/controller/lists/{kind}/{server}", guarded(get_list))
    app.router.add_put("/api/controller/lists/{kind}/{server}", guarded(put_list))
    app.router.add_delete("/api/controller/lists/{kind}/{server}", guarded(delete_list))
    app.router.add_put("/api/controller/lists/{kind}/{server}/{port}", guarded(put_entry))
    app.router.add_delete("/api/controller/lists/{kind}/{server}/{port}", guarded(delete_entry))
    app.router.add_get("/api/controller/keys", guarded(keys))
    app.router.add_get("/api/controller/keys/{name}", guarded(get_key))
    app.router.add_delete("/api/controller/keys/{name}", guarded(delete_key))
    app.router.add_get("/api/controller/monitor", guarded(monitors))
    app.router.add_get("/api/controller/monitor/{server}/{port}", guarded(monitor_series))
