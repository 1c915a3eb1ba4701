"""``swarmcast fleet receiver``: a small controller that stores what the fleet pushes and serves stream lists.

Endpoints (every request needs the token: ``?token=T``, ``Authorization: Bearer T`` or ``X-Token: T``; a wrong or
missing one is HTTP 403 with nothing stored):

- ``POST /monitor``: one node's monitor JSON (with ``port`` and ``type``) → ``DIR/monitor/<ip>_<port>.json``.
- ``POST /metadata``: ``{"<name>": {"last_seq": N, "private_key": "..."}}`` → ``DIR/metadata/<name>.json``, mode
  0600 in a 0700 directory. A stored ``last_seq`` never goes back; a different key for a stored name is refused
  (409: restoring would start another broadcast) unless the receiver runs with ``--allow-key-change``.
- ``GET /source_node[?get_metadata]``: ``{"result": [...]}`` from ``--source-config``, each entry given its stored
  ``metadata`` when ``get_metadata`` is asked (what ``fleet start-sources --get-remote-metadata`` restores from).
- ``GET /support_node``: ``{"result": [...]}`` from ``--support-config``: a list, or an object from requesting
  IP address (or ``"default"``) to a list, so each server gets its own support nodes.

Config files are re-read on every request (edit them to move a stream). Keys are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from swarmcast.commands.options import port
from swarmcast.files import write_file_atomically
from swarmcast.fleet.config import STREAM_UID, ConfigError, parse_text, read_text
from swarmcast.http.listen import ListenError, listening
from swarmcast.logsetup import setup_logging
from swarmcast.node.lifecycle import run_until_stopped

log = logging.getLogger("swarmcast.fleet.receiver")
MAX_BODY = 4 * 1024 * 1024
MAX_KEY_BYTES = 16 * 1024
MAX_STREAMS_PER_POST = 10_000



class Store:
    def __init__(self, directory: Path, *, allow_key_change: bool = False) -> None:
        self.directory = directory
        self.allow_key_change = allow_key_change
        for sub in ("", "metadata", "monitor"):
            (directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory / sub, 0o700)

    def metadata(self) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = {}
        for path in sorted((self.directory / "metadata").glob("*.json")):
            try:
                found[path.stem] = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
        return found

    def put_metadata(self, body: object) -> tuple[int, dict[str, object]]:
        if not isinstance(body, dict) or len(body) > MAX_STREAMS_PER_POST:
            return 400, {"error": "expected {\"<name>\": {\"last_seq\": N, \"private_key\": \"...\"}}"}
        checked: dict[str, tuple[int, str]] = {}
        for name, entry in body.items():
            if not isinstance(name, str) or not STREAM_UID.fullmatch(name):
                return 400, {"error": f"{str(name)[:80]!r} is not a stream name"}
            if not isinstance(entry, dict):
                return 400, {"error": f"{name}: not an object"}
            seq, key = entry.get("last_seq"), entry.get("private_key")
            if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62:
                return 400, {"error": f"{name}.last_seq: not a piece number"}
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_BYTES:
                return 400, {"error": f"{name}.private_key: missing, empty or over {MAX_KEY_BYTES} bytes"}
            checked[name] = (seq, key)
        stored = self.metadata()
        for name, (_, key) in checked.items():
            old = stored.get(name)
            if old is not None and old.get("private_key") != key and not self.allow_key_change:
                return 409, {"error": f"{name}: a different key is stored for this stream; refused"}
        for name, (pushed, key) in checked.items():
            old_seq = stored.get(name, {}).get("last_seq")
            seq = pushed
            if isinstance(old_seq, int) and old_seq > pushed and stored[name].get("private_key") == key:
                seq = old_seq  # piece numbers never go back
            record = {"last_seq": seq, "private_key": key, "updated_at": round(time.time(), 3)}
            path = self.directory / "metadata" / f"{name}.json"
            write_file_atomically(path, json.dumps(record).encode(), mode=0o600, durable=True)
        log.info("metadata stored for %d stream(s): %s", len(checked), ", ".join(sorted(checked)))
        return 200, {"result": {"stored": sorted(checked)}}

    def put_monitor(self, body: object, remote: str) -> tuple[int, dict[str, object]]:
        if not isinstance(body, dict):
            return 400, {"error": "expected a JSON object"}
        node_port = body.get("port")
        if not isinstance(node_port, int) or isinstance(node_port, bool) or not 0 < node_port < 65536:
            return 400, {"error": "port: missing or not a port"}
        if body.get("type") not in ("source", "support"):
            return 400, {"error": "type: not source or support"}
        body = {**body, "received_at": round(time.time(), 3), "from": remote}
        name = f"{ipaddress.ip_address(remote)}_{node_port}.json".replace(":", "-")
        write_file_atomically(self.directory / "monitor" / name, json.dumps(body).encode(), mode=0o600)
        return 200, {"result": "ok"}


def _list_for(data: object, remote: str, origin: str) -> list[object]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        picked = data.get(remote, data.get("default", []))
        if isinstance(picked, list):
            return picked
    raise ConfigError([f"{origin}: not a list, nor an object of IP address -> list"])


def make_app(store: Store, token: str, *, source_config: Path | None,
             support_config: Path | None) -> web.Application:  # fmt: skip
    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:  # fmt: skip
        given = request.query.get("token") or request.headers.get("X-Token") or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "bad or missing token"}, status=403)
        return await handler(request)

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)

    async def body_json(request: web.Request) -> object:
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type="application/json") \
                from None  # fmt: skip

    async def monitor(request: web.Request) -> web.Response:
        status, answer = store.put_monitor(await body_json(request), request.remote or "0.0.0.0")
        return web.json_response(answer, status=status)

    async def metadata(request: web.Request) -> web.Response:
        status, answer = store.put_metadata(await body_json(request))
        return web.json_response(answer, status=status)

    def stream_list(path: Path | None, request: web.Request) -> list[object]:
        if path is None:
            raise ConfigError([f"{request.path}: this receiver was started without a config for it"])
        return _list_for(parse_text(read_text(path), str(path)), request.remote or "", str(path))

    async def source_node(request: web.Request) -> web.Response:
        try:
            entries = stream_list(source_config, request)
        except ConfigError as error:
            return web.json_response({"error": str(error)})
        if "get_metadata" in request.query:
            stored = store.metadata()
            entries = [
                {**e, "metadata": {"last_seq": stored[e["stream_uid"]]["last_seq"],
                                   "private_key": stored[e["stream_uid"]]["private_key"]}}
                if isinstance(e, dict) and isinstance(e.get("stream_uid"), str) and e["stream_uid"] in stored
                else e
                for e in entries
            ]  # fmt: skip
        return web.json_response({"result": entries})

    async def support_node(request: web.Request) -> web.Response:
        try:
            return web.json_response({"result": stream_list(support_config, request)})
        except ConfigError as error:
            return web.json_response({"error": str(error)})

    app.router.add_post("/monitor", monitor)
    app.router.add_post("/metadata", metadata)
    app.router.add_get("/source_node", source_node)
    app.router.add_get("/support_node", support_node)
    return app


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("receiver", help="store pushed monitoring and metadata; serve stream lists (token-protected)")
    p.add_argument("--port", type=port, required=True, help="TCP port to answer on (required)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--dir", type=Path, required=True, help="where to store: metadata/, monitor/, mode 0700 (required)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--token", help="the token every request must carry (this or --token-file is required)")
    group.add_argument("--token-file", type=Path, help="a file holding the token, kept off the command "
                                                       "line (this or --token is required)")
    p.add_argument("--source-config", type=Path, metavar="FILE", help="served at GET /source_node "
                                                                      "(default: none, answered with an error)")
    p.add_argument("--support-config", type=Path, metavar="FILE", help="served at GET /support_node "
                                                                       "(default: none, answered with an error)")
    p.add_argument("--allow-key-change", action="store_true", help="let a push replace a stream's stored "
                                                                   "key (default: refused, 409)")
    p.add_argument("--log-file", type=Path, help="log to this file (default: stderr)")
    p.set_defaults(func=run_receiver)


def run_receiver(args: argparse.Namespace) -> int:
    prog = "swarmcast fleet receiver"
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as error:
            print(f"{prog}: error: --token-file {args.token_file}: {error.strerror}", file=sys.stderr)
            return 2
    if not token or len(token) < 8:
        print(f"{prog}: error: --token: at least 8 characters", file=sys.stderr)
        return 2
    try:
        store = Store(args.dir, allow_key_change=args.allow_key_change)
    except OSError as error:
        print(f"{prog}: error: --dir {args.dir}: {error.strerror}", file=sys.stderr)
        return 2
    setup_logging(args.log_file, verbose=False)
    failed: list[str] = []

    async def main(stop: asyncio.Event) -> None:
        app = make_app(store, token, source_config=args.source_config, support_config=args.support_config)
        try:
            async with listening(app, args.bind, args.port):
                log.info("fleet receiver on http://%s:%d/ storing in %s", args.bind, args.port, args.dir)
                await stop.wait()
        except ListenError as error:
            failed.append(str(error))

    asyncio.run(run_until_stopped(main))
    if failed:
        print(f"{prog}: error: {failed[0]}", file=sys.stderr)
        return 2
    return 0
