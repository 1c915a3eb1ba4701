"""``swarmcast registry``: the registry web application (registry/app.py) on SQLite or PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from swarmcast.commands.options import add_log_options, port, positive_float, positive_int, start_logging
from swarmcast.files import write_file_atomically
from swarmcast.node.lifecycle import run_until_stopped
from swarmcast.tokens import REGISTRY_NODE_TOKEN_ENV, REGISTRY_TOKEN_ENV

log = logging.getLogger("swarmcast.registry")

TOKEN_FILE = "registry.token"  # noqa: S105 - a file name
NODE_TOKEN_FILE = "registry-node.token"  # noqa: S105 - a file name


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "swarmcast" / "registry"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from swarmcast.registry import state as defaults  # noqa: PLC0415 - only the registry command needs it

    parser = subparsers.add_parser(
        "registry", help="the web application listing streams and nodes, with the fleet's controller endpoints",
        description="Streams and nodes register here and send heartbeats; people read its pages (stream list, "
                    "watch page, dashboard), nodes and the fleet its JSON API. docs/registry.md.",
    )  # fmt: skip
    parser.add_argument("--port", type=port, default=defaults.DEFAULT_PORT,
                        help="TCP port of the web application (default %(default)s)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--db", metavar="URL",
                        help="SQLAlchemy database URL, e.g. postgresql://user:pass@host/db "
                             "(default: SQLite file registry.sqlite3 in --state-dir)")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help=f"where the SQLite file, the generated token and the key file live (default "
                             f"{default_state_dir()})")  # fmt: skip
    parser.add_argument("--token", metavar="TOKEN",
                        help=f"admin (fleet) token: the controller and admin routes, broadcast keys included, and "
                             f"the node routes too; give it only to swarmcast fleet (default: ${REGISTRY_TOKEN_ENV}, "
                             f"else one generated into --state-dir/{TOKEN_FILE})")  # fmt: skip
    parser.add_argument("--node-token", metavar="TOKEN",
                        help=f"node token: register, heartbeat, leave, register streams, nothing else; give it to "
                             f"nodes, engines and broadcasters as --registry-token (default: "
                             f"${REGISTRY_NODE_TOKEN_ENV}, else one generated into --state-dir/{NODE_TOKEN_FILE})")
    parser.add_argument("--heartbeat-timeout", type=positive_float, default=defaults.DEFAULT_HEARTBEAT_TIMEOUT,
                        metavar="SECONDS", help="a node silent this long is marked gone (default %(default)s)")
    parser.add_argument("--retention", type=positive_float, default=defaults.DEFAULT_RETENTION, metavar="SECONDS",
                        help="seconds of heartbeat figures kept for the charts (default %(default)s)")
    parser.add_argument("--max-samples", type=positive_int, default=defaults.MAX_SAMPLES, metavar="N",
                        help="rows of heartbeat figures kept at most, whatever --retention (default %(default)s)")
    # The fleet's controller (registry/controller.py, docs/registry.md "Controller for the fleet").
    parser.add_argument("--key-file", type=Path, metavar="FILE",
                        help="the key that seals the broadcast keys (.sauth) the fleet pushes, AES-256-GCM; created "
                             "mode 0600 when absent (default: registry.key in --state-dir, warned about: a backup of "
                             "that directory would hold both the sealed keys and this key; keep it elsewhere)")
    parser.add_argument("--monitor-retention", type=positive_float, default=86_400.0, metavar="SECONDS",
                        help="seconds of the fleet's pushed node monitors kept (default %(default)s)")
    parser.add_argument("--monitor-max-rows", type=positive_int, default=100_000, metavar="N",
                        help="pushed node monitors kept at most, whatever --monitor-retention (default %(default)s)")
    parser.add_argument("--monitor-max-bytes", type=positive_int, default=64 * 1024 * 1024, metavar="BYTES",
                        help="JSON bytes of pushed node monitors kept at most (default %(default)s)")
    add_log_options(parser)
    parser.set_defaults(func=run_registry, prepare=start_logging)


def _error(message: str) -> int:
    print(f"swarmcast registry: error: {message}", file=sys.stderr)
    return 2


def load_or_create_token(state_dir: Path, name: str = TOKEN_FILE) -> str:
    """The token in ``state_dir/name``, created (0600, 32 random bytes, URL-safe) when absent."""
    path = state_dir / name
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    write_file_atomically(path, (token + "\n").encode(), mode=0o600, durable=True)
    return token


def _inside(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


def run_registry(args: argparse.Namespace) -> int:
    from swarmcast.http.listen import ListenError, listening  # noqa: PLC0415
    from swarmcast.registry import controller  # noqa: PLC0415
    from swarmcast.registry.app import build_app  # noqa: PLC0415
    from swarmcast.registry.db import Database, DatabaseError, redact_url, sqlite_url  # noqa: PLC0415
    from swarmcast.registry.keys import KeyFileError  # noqa: PLC0415
    from swarmcast.registry.state import RegistrySettings, RegistryState  # noqa: PLC0415

    state_dir: Path = args.state_dir or default_state_dir()
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        return _error(f"--state-dir {state_dir}: {error.strerror or error}")
    token = args.token or os.environ.get(REGISTRY_TOKEN_ENV, "")
    node_token = args.node_token or os.environ.get(REGISTRY_NODE_TOKEN_ENV, "")
    if token and node_token and token == node_token:
        return _error("--node-token: the node token must differ from the admin token (--token): a node would "
                      "read the broadcast keys")  # fmt: skip
    if not token:
        try:
            token = load_or_create_token(state_dir)
        except OSError as error:
            return _error(f"--state-dir {state_dir}: cannot keep the token: {error.strerror or error}")
        log.info("admin token in %s (give it only to swarmcast fleet)", state_dir / TOKEN_FILE)
    url = args.db or sqlite_url(state_dir / "registry.sqlite3")
    try:
        database = Database(url)
        revision = database.upgrade()
    except DatabaseError as error:
        return _error(str(error))
    log.info("database %s at schema revision %s", redact_url(database.url), revision)
    if not node_token:
        try:
            node_token = load_or_create_token(state_dir, NODE_TOKEN_FILE)
        except OSError as error:
            database.dispose()
            return _error(f"--state-dir {state_dir}: cannot keep the node token: {error.strerror or error}")
        log.info("node token in %s (give it to nodes as --registry-token)", state_dir / NODE_TOKEN_FILE)
    if token == node_token:  # a token file copied over the other
        database.dispose()
        return _error(f"--node-token: the node token must differ from the admin token (--token; see "
                      f"{state_dir / TOKEN_FILE} and {state_dir / NODE_TOKEN_FILE})")  # fmt: skip
    settings = RegistrySettings(state_dir=state_dir, heartbeat_timeout=args.heartbeat_timeout,
                                retention=args.retention, max_samples=args.max_samples)  # fmt: skip
    state = RegistryState(db=database, token=token, node_token=node_token, settings=settings)
    try:
        ctl = controller.prepare(state, controller.ControllerSettings(
            key_file=args.key_file, monitor_retention=args.monitor_retention,
            monitor_max_rows=args.monitor_max_rows, monitor_max_bytes=args.monitor_max_bytes))  # fmt: skip
    except KeyFileError as error:
        database.dispose()
        return _error(str(error))
    log.info("broadcast keys sealed with the key file %s (key id %s)", ctl.box.path, ctl.box.key_id)
    if ctl.box.path is not None and _inside(ctl.box.path, state_dir):
        log.warning("the key file %s is inside --state-dir %s: a backup of that directory holds both the sealed "
                    "keys (in the database) and the key that opens them; keep it elsewhere with --key-file",
                    ctl.box.path, state_dir)  # fmt: skip
    failed: list[str] = []

    async def main(stop: asyncio.Event) -> None:
        try:
            async with listening(build_app(state), args.bind, args.port):
                log.info("registry on http://%s:%d/", args.bind, args.port)
                await stop.wait()
        except ListenError as error:
            failed.append(str(error))
        finally:
            database.dispose()

    asyncio.run(run_until_stopped(main))
    if failed:
        return _error(failed[0])
    return 0
