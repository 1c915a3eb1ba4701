"""Talking to the broadcaster's controller and to the nodes' web interfaces: small bounded HTTP, no redirects.

A stream list is a local file (absolute, or relative to ``root``) or an http(s) URL answering
``{"result": [...]}``; ``{"error": "..."}`` aborts the run with that message (streaming-utils' get_remote_config).
Requests leave from the config's ``bind`` address when it has one, so a controller that answers by the requesting
host (streaming-utils' support_node/get_config.php) sees this server's address.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from swarmcast.fleet import jsonc
from swarmcast.fleet.config import AppConfig, ConfigError, parse_text, read_text

TIMEOUT = 10.0  # seconds for one controller request
NODE_TIMEOUT = 3.0  # seconds for one node's /app/monitor
MAX_ANSWER_BYTES = jsonc.MAX_CONFIG_BYTES
MAX_ERROR_LENGTH = 300


class ControllerError(Exception):
    """The controller could not be reached or answered something unusable (one line)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def request(method: str, url: str, *, body: bytes | None = None, timeout: float = TIMEOUT,
            source: str | None = None, limit: int = MAX_ANSWER_BYTES) -> Answer:  # fmt: skip
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ControllerError(f"{url!r} is not an http:// or https:// URL")
    source_address = (source, 0) if source else None
    try:
        port = parts.port
    except ValueError:
        raise ControllerError(f"{url!r} has a bad port") from None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout,
                                                 source_address=source_address,
                                                 context=ssl.create_default_context())  # fmt: skip
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout, source_address=source_address)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    headers = {"User-Agent": "swarmcast-fleet", "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as error:
        raise ControllerError(f"{method} {redact(url)}: {error or type(error).__name__}") from None
    finally:
        connection.close()
    if len(data) > limit:
        raise ControllerError(f"{method} {redact(url)}: answer larger than {limit} bytes")
    return Answer(response.status, data)


def redact(url: str) -> str:
    """A URL fit for logs: a ``token=`` query value and the token in a node's ``/app/<TOKEN>/...`` path are hidden."""
    parts = urlsplit(url)
    if parts.path.startswith("/app/") and parts.path.count("/") >= 3:
        parts = parts._replace(path="/app/***/" + parts.path.split("/", 3)[3])
    if not parts.query:
        return parts.geturl()
    query = "&".join(f"{k}=***" if k.lower() in ("token", "key", "secret") else item
                     for item in parts.query.split("&") for k in [item.split("=", 1)[0]])  # fmt: skip
    return parts._replace(query=query).geturl()


def with_get_metadata(url: str) -> str:
    return url + ("&get_metadata" if "?" in url else "?get_metadata")


def load_list(app: AppConfig, endpoint: str, *, get_metadata: bool = False) -> tuple[object, str]:
    """The raw stream list of ``controller.<endpoint>`` and where it came from (for error messages)."""
    location = getattr(app.controller, endpoint)
    if not location:
        raise ConfigError([f"{app.path}: controller.{endpoint}: missing"])
    if not location.startswith(("http:", "https:")):
        path = app.local_path(location)
        return parse_text(read_text(path), str(path)), str(path)
    url = with_get_metadata(location) if get_metadata else location
    answer = request("GET", url, source=app.bind)
    shown = redact(location)
    if answer.status != 200:
        raise ControllerError(f"controller.{endpoint} {shown}: HTTP {answer.status}")
    try:
        data = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested past the stack
        raise ControllerError(f"controller.{endpoint} {shown}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise ControllerError(f"controller.{endpoint} {shown}: the answer is not a JSON object")
    if data.get("error"):
        message = str(data["error"])[:MAX_ERROR_LENGTH].replace("\n", " ")
        raise ControllerError(f"controller.{endpoint} {shown}: error: {message}")
    if "result" not in data:
        raise ControllerError(f"controller.{endpoint} {shown}: the answer has no result")
    return data["result"], shown


def post_json(app: AppConfig, url: str, payload: object) -> Answer:
    return request("POST", url, body=json.dumps(payload).encode(), source=app.bind)


def node_monitor(app: AppConfig, port: int) -> dict[str, object]:
    """A node's /app/[TOKEN/]monitor object; ControllerError when it does not answer one."""
    token = app.node_access_token
    path = f"/app/{token}/monitor" if token else "/app/monitor"
    answer = request("GET", f"http://{app.node_host}:{port}{path}", timeout=NODE_TIMEOUT, limit=4 * 1024 * 1024)
    if answer.status != 200:
        raise ControllerError(f"HTTP {answer.status}")
    try:
        data = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested past the stack
        raise ControllerError("the monitor answer is not JSON") from None
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    if not isinstance(data, dict):
        raise ControllerError("the monitor answer is not a JSON object")
    return data
