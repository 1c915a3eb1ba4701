"""``swarmcast ctl``: control a local engine or node over its HTTP interface.

    swarmcast ctl [--url URL] [--token TOKEN] [--json] sessions|start|stop|limits|monitor ...

The target is an engine's playback API (default http://127.0.0.1:6878) or a node's port (``--url
http://127.0.0.1:8621``); which one is found out with one request (an engine answers ``/webui/api/service``).
Engines: ``sessions`` lists the broadcasts and playback sessions (``/app/sessions``), ``start`` opens a session
(``/ace/getstream?format=json``), ``stop`` ends one (``/ace/cmd/...?method=stop``). Both: ``limits`` shows or
changes upload slots, upload limit and max peers (engine ``/app/settings``, node ``/app/update``), ``monitor``
shows the figures (node ``/app/monitor``; engine: its broadcasts). ``--json`` prints the answer as JSON instead of
tables. A bad flag is one line and exit 2; an answer the target refuses or a target that cannot be reached is one
line and exit 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmcast.commands.options import non_negative_int, positive_int
from swarmcast.http.node_api import MAX_PEERS_LIMIT, MAX_UPLOAD_LIMIT_KBPS, MAX_UPLOAD_SLOTS_LIMIT

DEFAULT_URL = "http://127.0.0.1:6878"
TOKEN_ENV = "SWARMCAST_CTL_TOKEN"  # noqa: S105 - the name of a variable, not a token
MAX_ANSWER = 8 * 1024 * 1024  # bytes of one answer read
EXIT_FAILED = 1
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


class CtlError(Exception):
    """The target refused, or could not be reached; one line."""


def target_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text[:100]!r} is not an http://HOST:PORT URL")
    try:
        parts.port  # noqa: B018 - raises for a port past 65535
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:100]!r} has a bad port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{text[:100]!r}: give the engine's or node's base URL, without a path")
    return f"{parts.scheme}://{parts.netloc}"


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = non_negative_int(text) if low == 0 else positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{text} is over {high}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("ctl", help="control a local engine or node over HTTP",
                                   description=__doc__.split("\n\n")[2] if __doc__ else None)  # fmt: skip
    _common(parser, None)
    commands = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    sub = commands.add_parser("sessions", help="an engine's broadcasts and playback sessions")
    _common(sub, argparse.SUPPRESS)
    sub = commands.add_parser("start", help="open a playback session on an engine; prints its playback URL")
    sub.add_argument("what", metavar="ID|MAGNET|URL|FILE",
                     help="a content id (40 hex digits), a magnet link, a transport file's http(s) URL, or a local "
                          "transport file (sent as data=)")  # fmt: skip
    _common(sub, argparse.SUPPRESS)
    sub = commands.add_parser("stop", help="stop an engine's playback session")
    sub.add_argument("session", metavar="SESSION_ID", help="the session id, or a unique prefix of 8 or more")
    _common(sub, argparse.SUPPRESS)
    sub = commands.add_parser("limits", help="show or change upload slots, upload limit and max peers")
    sub.add_argument("--upload-slots", type=_bounded(0, MAX_UPLOAD_SLOTS_LIMIT), metavar="N",
                     help=f"peers served at once, 0..{MAX_UPLOAD_SLOTS_LIMIT} (0 = upload nothing; default: unchanged)")
    sub.add_argument("--upload-limit", type=_bounded(0, MAX_UPLOAD_LIMIT_KBPS), metavar="KB_PER_S",
                     help="upload limit in KB/s (1 KB = 1000 bytes), 0 = none (default: unchanged)")
    sub.add_argument("--max-peers", type=_bounded(1, MAX_PEERS_LIMIT), metavar="N",
                     help=f"peers connected per broadcast, 1..{MAX_PEERS_LIMIT} (default: unchanged)")
    _common(sub, argparse.SUPPRESS)
    sub = commands.add_parser("monitor", help="a node's monitor figures (an engine: its broadcasts)")
    _common(sub, argparse.SUPPRESS)
    parser.set_defaults(func=run_ctl, command_prog=parser.prog)


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    """The target options, before or after the command (the command's own copy wins when given)."""
    suppress = default is argparse.SUPPRESS
    parser.add_argument("--url", type=target_url, default=default if suppress else DEFAULT_URL, metavar="URL",
                        help=f"the engine or node (default {DEFAULT_URL}, the engine)")
    parser.add_argument("--token", default=default, metavar="TOKEN",
                        help=f"a node's --service-access-token (default: ${TOKEN_ENV}, else none)")
    parser.add_argument("--json", action="store_true", default=default if suppress else False,
                        help="print the answer as JSON (default: tables)")
    parser.add_argument("--timeout", type=positive_int, default=default if suppress else 10, metavar="SECONDS",
                        help="seconds to wait for an answer (default 10)")


# -- HTTP ---------------------------------------------------------------------------------------------------------


class Client:
    def __init__(self, base: str, token: str | None, timeout: float) -> None:
        self.base, self.token, self.timeout = base, token, timeout

    def request(self, path: str, *, query: Mapping[str, str] | None = None, body: object = None) -> Any:
        """The JSON answer (whatever its status); CtlError when there is none."""
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                raw = response.read(MAX_ANSWER)
        except urllib.error.HTTPError as error:
            raw = error.read(MAX_ANSWER)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CtlError(f"cannot reach {self.base}: {_why(reason)}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CtlError(f"{self.base}{self.shown(path)} answered something that is not JSON") from None

    def shown(self, path: str) -> str:
        """``path`` fit for a message: the access token's segment as ``***`` (messages end up in logs and
        terminals that others read)."""
        if not self.token:
            return path
        secret = f"/app/{urllib.parse.quote(self.token, safe='')}/"
        return path.replace(secret, "/app/***/")

    def is_engine(self) -> bool:
        """An engine answers get_version in JSON; a node answers that path with aiohttp's plain-text 404."""
        try:
            answer = self.request("/webui/api/service", query={"method": "get_version"})
        except CtlError as error:
            if "not JSON" in str(error):
                return False
            raise
        return isinstance(answer, dict) and isinstance(answer.get("result"), dict)

    def app(self, name: str) -> str:
        return f"/app/{urllib.parse.quote(self.token, safe='')}/{name}" if self.token else f"/app/{name}"


def _why(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is it running? is --url right?)"
    if isinstance(reason, ConnectionResetError | ConnectionAbortedError) or "closed" in str(reason).lower():
        return "the connection was closed without an answer (is this machine allowed to use it? --monitor-node-ip)"
    if isinstance(reason, TimeoutError):
        return "no answer in time (--timeout)"
    return str(reason)[:200]


def _engine_answer(answer: Any) -> Any:
    if not isinstance(answer, dict):
        raise CtlError("the engine answered an unexpected shape")
    if answer.get("error"):
        raise CtlError(f"the engine refused: {str(answer['error'])[:300]}")
    return answer.get("response", answer.get("result"))


def _node_answer(answer: Any) -> Any:
    if isinstance(answer, dict) and answer.get("error") and set(answer) <= {"result", "error"}:
        raise CtlError(f"the node refused: {str(answer['error'])[:300]}")
    return answer


# -- commands -----------------------------------------------------------------------------------------------------


def _start_query(what: str) -> dict[str, str]:
    if _HEX40.fullmatch(what):
        return {"content_id": what.lower()}
    if what.startswith("magnet:"):
        return {"magnet": what}
    if what.startswith(("http://", "https://")):
        return {"url": what}
    path = Path(what)
    if path.is_file():
        return {"data": base64.urlsafe_b64encode(path.read_bytes()[: 64 * 1024]).decode().rstrip("=")}
    raise CtlError(f"{what[:100]!r} is not a content id, a magnet link, an http(s) URL or a transport file")


def _limits(client: Client, engine: bool, args: argparse.Namespace) -> dict[str, Any]:
    changes = {"upload_slots": args.upload_slots, "upload_limit": args.upload_limit, "max_peers": args.max_peers}
    changes = {k: v for k, v in changes.items() if v is not None}
    if engine:
        if changes:
            return dict(_engine_answer(client.request("/app/settings", body=changes)))
        return dict(_engine_answer(client.request("/app/settings")))
    if changes:
        query = {"max_upload_slots" if k == "upload_slots" else k: str(v) for k, v in changes.items()}
        answer = _node_answer(client.request(client.app("update"), query=query))
    else:
        answer = _node_answer(client.request(client.app("monitor")))
    return {"upload_slots": answer.get("max_upload_slots"), "upload_limit": answer.get("upload_limit"),
            "max_peers": answer.get("max_peers")}  # fmt: skip


def run(args: argparse.Namespace) -> Any:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    client = Client(args.url, token, float(args.timeout))
    engine = client.is_engine()
    command = args.ctl_command
    if command in ("sessions", "start", "stop") and not engine:
        raise CtlError(f"{args.url} is a node, not an engine: '{command}' is for engines (try 'ctl monitor')")
    if command == "sessions":
        return _engine_answer(client.request("/app/sessions"))
    if command == "start":
        return _engine_answer(client.request("/ace/getstream", query={**_start_query(args.what), "format": "json"}))
    if command == "stop":
        sessions = _engine_answer(client.request("/app/sessions"))["sessions"]
        matches = [s for s in sessions if s["session_id"] == args.session] or (
            [s for s in sessions if s["session_id"].startswith(args.session)] if len(args.session) >= 8 else [])
        if len(matches) != 1:
            raise CtlError(f"no session {args.session[:64]!r}" if not matches else
                           f"{len(matches)} sessions start with {args.session!r}; give more of the id")  # fmt: skip
        session = matches[0]
        path = f"/ace/cmd/{session['infohash']}/{session['session_id']}"
        _engine_answer(client.request(path, query={"method": "stop"}))
        return {"stopped": session["session_id"], "infohash": session["infohash"]}
    if command == "limits":
        return _limits(client, engine, args)
    if engine:  # monitor
        return _engine_answer(client.request("/app/sessions"))["broadcasts"]
    return _node_answer(client.request(client.app("monitor")))


def run_ctl(args: argparse.Namespace) -> int:
    try:
        result = run(args)
    except CtlError as error:
        print(f"{args.command_prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        from swarmcast.commands.ctl_tables import show  # noqa: PLC0415 - rich loads for human output only

        show(args.ctl_command, result)
    return 0
