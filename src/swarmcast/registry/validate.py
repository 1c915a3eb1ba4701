"""Requests of the registry's JSON API turned into the checked records of queries.py, or a one-line ``RequestError``
naming the field and what is wrong with it (the API answers it as a 400).

Every value from the network is checked here once: types (a JSON ``true`` is not a number), lengths, counts,
patterns, ranges, nesting. Unknown keys are ignored (a newer node may send more) and never stored. A stream's
transport file must parse as a transport file or a channel file (transport.py, channel.py) and its SHA-1 must
be the content id it is registered under, so the registry never hands out a file that does not play under the
id it lists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import re
from typing import Any
from urllib.parse import urlsplit

from swarmcast.channel import Channel, ChannelError
from swarmcast.registry.queries import ROLES, STATES, STREAM_FIGURES, Heartbeat, NodeInfo, StreamInfo
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

MAX_CONTENT_IDS = 64  # broadcasts one node or engine reports at once
MAX_FIGURE_KEYS = 64  # keys of one figures object (known ones are kept, the rest dropped)
MAX_FIGURE = 1e15  # any figure (bytes, bits per second, seconds) is below this
MAX_NAME = 64
MAX_TITLE = 200
MAX_VERSION = 40
MAX_ADDRESS = 80
MAX_HTTP_URL = 200
MAX_CATEGORIES = 16
MAX_CATEGORY = 32
MAX_QUALITY = 32
MAX_BITRATE = 10**11  # bits per second
MAX_CAPACITY = 10**12  # bits per second
MAX_RENDITIONS = 16
MAX_RENDITION_KEYS = 16
MAX_RENDITION_TEXT = 200
MAX_TRANSPORT_BYTES = MAX_METADATA_SIZE  # a transport or channel file is never larger (transport.py refuses it)
MAX_DEPTH = 4  # nesting of a request body: {"figures": {"streams": {cid: {...}}}}

# The figures a heartbeat may carry: node-wide ones and, per content id, the stream's ones.
NODE_FIGURES = frozenset({"peers", "upload_bps", "download_bps", "cpu_percent", "rss_bytes", "viewers", "delay_s",
                          "startup_s", "stalls"})  # fmt: skip
COUNT_FIGURES = frozenset({"peers", "viewers", "stalls", "rss_bytes"})  # whole numbers

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Registry names are URL path segments and file names: lower case, no leading dot, and never 40 hex digits
# (that would read as a content id).
_STREAM_NAME = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,63}")
_CATEGORY = re.compile(r"[a-z0-9_+-]{1,32}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_VERSION = re.compile(r"[\x21-\x7e]{1,40}")


class RequestError(ValueError):
    """A request field that is missing or wrong; the message names it."""


def depth(value: object) -> int:
    """How deeply ``value`` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack += [(child, level + 1) for child in children]
    return deepest


def body_object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError("the body is not a JSON object")
    if depth(value) > MAX_DEPTH:
        raise RequestError(f"the body nests deeper than {MAX_DEPTH} levels")
    return value


def content_id(value: object, field: str = "content_id") -> str:
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        raise RequestError(f"{field}: not 40 hex digits")
    return value.lower()


def is_content_id(text: str) -> bool:
    """40 hex digits (either case): the one content id check of the registry (queries.py and
    controller_store.py use it too)."""
    return _HEX40.fullmatch(text) is not None


def is_node_id(text: str) -> bool:
    return _UUID.fullmatch(text) is not None


def stream_key(text: str) -> str | None:
    """A path's ``<content id or name>``, or None when it can be neither (the API answers 404)."""
    if is_content_id(text):
        return text.lower()
    return text if _STREAM_NAME.fullmatch(text) else None


def _text(body: dict[str, Any], field: str, limit: int, *, optional: bool = False) -> str | None:
    value = body.get(field)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{field}: {'not a string' if field in body else 'missing'}")
    if len(value) > limit:
        raise RequestError(f"{field}: longer than {limit} characters")
    if not value.isprintable():
        raise RequestError(f"{field}: holds control characters")
    return value


def _int(body: dict[str, Any], field: str, limit: int) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise RequestError(f"{field}: not a whole number in 0..{limit}")
    return value


def content_ids(value: object, field: str = "content_ids") -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RequestError(f"{field}: not a list")
    if len(value) > MAX_CONTENT_IDS:
        raise RequestError(f"{field}: more than {MAX_CONTENT_IDS} entries")
    ids = [content_id(item, f"{field}[{i}]") for i, item in enumerate(value)]
    return tuple(dict.fromkeys(ids))  # repeats dropped, order kept


def address(value: object, remote: str | None) -> str | None:
    """``host:port`` with an IP literal (``[v6]:port``) or a DNS name; an unspecified host (0.0.0.0, [::]: a node
    that listens on every interface) becomes the address the request came from."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ADDRESS:
        raise RequestError(f"address: not a string of at most {MAX_ADDRESS} characters")
    host, port = _host_port(value, "address")
    if port is None:
        raise RequestError(f"address: {value!r} has no port")
    if _unspecified(host):
        if remote is None:
            raise RequestError(f"address: {value!r} names no host")
        host = remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(text: str, field: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise RequestError(f"{field}: {text!r} is not [IPv6]:port")
        port_text = rest[1:] if rest else None
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise RequestError(f"{field}: {text!r} is not [IPv6]:port") from None
    else:
        host, sep, port_text_or = text.rpartition(":")
        if not sep:
            host, port_text_or = text, ""
        port_text = port_text_or if sep else None
        if not _hostname_or_ipv4(host):
            raise RequestError(f"{field}: {text!r} is not host:port")
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        raise RequestError(f"{field}: {text!r}: the port is not in 1..65535")
    return host, int(port_text)


def _hostname_or_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels) \
        and not labels[-1].isdigit()  # fmt: skip


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def http_url(value: object, remote: str | None) -> str | None:
    """A node's web interface: ``http(s)://host[:port][/path]`` without credentials, query or fragment."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_HTTP_URL or not value.isprintable():
        raise RequestError(f"http: not a URL of at most {MAX_HTTP_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise RequestError(f"http: {value!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc or parts.query \
            or parts.fragment or " " in value:  # fmt: skip
        raise RequestError(f"http: {value!r} is not http://host:port")
    host, port = _host_port(parts.netloc, "http")
    if _unspecified(host) and remote is not None:
        host = remote
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    return f"{parts.scheme}://{netloc}{parts.path}"


def node_info(value: object, remote: str | None) -> NodeInfo:
    body = body_object(value)
    role = body.get("role")
    if role not in ROLES:
        raise RequestError(f"role: not one of {', '.join(ROLES)}")
    version = _text(body, "version", MAX_VERSION)
    if not version or not _VERSION.fullmatch(version):
        raise RequestError("version: not 1..40 printable ASCII characters without spaces")
    name = _text(body, "name", MAX_NAME, optional=True)
    return NodeInfo(
        role=role, address=address(body.get("address"), remote), http=http_url(body.get("http"), remote),
        capacity_bps=_int(body, "capacity_bps", MAX_CAPACITY), version=version,
        content_ids=content_ids(body.get("content_ids", []), "content_ids"), name=name or None,
    )  # fmt: skip


def _figures(value: object, allowed: frozenset[str], field: str) -> dict[str, float | int]:
    if not isinstance(value, dict):
        raise RequestError(f"{field}: not an object")
    if len(value) > MAX_FIGURE_KEYS:
        raise RequestError(f"{field}: more than {MAX_FIGURE_KEYS} keys")
    kept: dict[str, float | int] = {}
    for key in allowed & value.keys():
        figure = value[key]
        if figure is None:
            continue
        whole = key in COUNT_FIGURES
        if isinstance(figure, bool) or not isinstance(figure, (int, float)) or (whole and not isinstance(figure, int)) \
                or not math.isfinite(figure) or not 0 <= figure < MAX_FIGURE:  # fmt: skip
            kind = "a whole number" if whole else "a number"
            raise RequestError(f"{field}.{key}: not {kind} in 0..{MAX_FIGURE:.0e}")
        kept[key] = figure
    return kept


def heartbeat(value: object) -> Heartbeat:
    """A heartbeat body. Per-stream figures come in ``figures.streams`` (content id -> figures); without
    ``content_ids`` the node's streams stay as they were (queries.heartbeat)."""
    body = body_object(value)
    ids = content_ids(body["content_ids"]) if body.get("content_ids") is not None else None
    raw = body.get("figures", {})
    figures = _figures(raw, NODE_FIGURES, "figures")
    per_stream: dict[str, dict[str, Any]] | None = None
    streams = raw.get("streams") if isinstance(raw, dict) else None
    if streams is not None:
        if not isinstance(streams, dict) or len(streams) > MAX_CONTENT_IDS:
            raise RequestError(f"figures.streams: not an object of at most {MAX_CONTENT_IDS} content ids")
        per_stream = {}
        for key, item in streams.items():
            cid = content_id(key, "figures.streams key")
            per_stream[cid] = _figures(item, STREAM_FIGURES, f"figures.streams.{cid}")
    return Heartbeat(content_ids=ids, figures=figures, stream_figures=per_stream)


def _renditions(value: object) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_RENDITIONS:
        raise RequestError(f"renditions: not a list of at most {MAX_RENDITIONS}")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or len(item) > MAX_RENDITION_KEYS:
            raise RequestError(f"renditions[{i}]: not an object of at most {MAX_RENDITION_KEYS} keys")
        for key, field in item.items():
            if len(key) > MAX_NAME or not (field is None or isinstance(field, (bool, int, float))
                                           or (isinstance(field, str) and len(field) <= MAX_RENDITION_TEXT
                                               and field.isprintable())):  # they reach pages and headers
                raise RequestError(f"renditions[{i}]: {key[:MAX_NAME]!r} is not a number, boolean, null or short "
                              "string")  # fmt: skip
            if isinstance(field, float) and not math.isfinite(field):
                raise RequestError(f"renditions[{i}].{key}: not a finite number")
    return value


def transport(value: object, cid: str) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * (MAX_TRANSPORT_BYTES // 3 + 1):
        raise RequestError(f"transport: not base64 of at most {MAX_TRANSPORT_BYTES} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("transport: not base64") from None
    digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    if digest != cid:
        raise RequestError(f"transport: its SHA-1 is {digest}, not the content_id {cid}")
    try:
        Descriptor.decode(data)
    except TransportError as as_transport:
        try:
            Channel.decode(data)
        except ChannelError:
            raise RequestError(f"transport: {as_transport}") from None
    return data


def stream_info(value: object) -> StreamInfo:
    body = body_object(value)
    cid = content_id(body.get("content_id"))
    name = body.get("name")
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name) or is_content_id(name):
        raise RequestError("name: not 1..64 of a-z 0-9 . _ - (not starting with a dot, not 40 hex digits)")
    title = _text(body, "title", MAX_TITLE, optional=True) or name
    raw_categories = body.get("categories", [])
    if not isinstance(raw_categories, list) or len(raw_categories) > MAX_CATEGORIES:
        raise RequestError(f"categories: not a list of at most {MAX_CATEGORIES}")
    for i, category in enumerate(raw_categories):
        if not isinstance(category, str) or not _CATEGORY.fullmatch(category):
            raise RequestError(f"categories[{i}]: not 1..{MAX_CATEGORY} of a-z 0-9 _ + -")
    node = body.get("node_id")
    if node is not None and (not isinstance(node, str) or not is_node_id(node)):
        raise RequestError("node_id: not a node id this registry hands out")
    return StreamInfo(
        content_id=cid, name=name, title=title, categories=tuple(dict.fromkeys(raw_categories)),
        quality=_text(body, "quality", MAX_QUALITY, optional=True), bitrate=_int(body, "bitrate", MAX_BITRATE),
        renditions=_renditions(body.get("renditions")), transport=transport(body.get("transport"), cid),
        node_id=node,
    )  # fmt: skip


def node_filter(role: str | None, state: str | None) -> tuple[str | None, str | None]:
    if role is not None and role not in ROLES:
        raise RequestError(f"role: not one of {', '.join(ROLES)}")
    if state is not None and state not in STATES:
        raise RequestError(f"state: not one of {', '.join(STATES)}")
    return role, state


def seconds(text: str | None, default: float, limit: float) -> float:
    """The ``seconds`` of a series query: 1..``limit`` (the retention; more is cut to it)."""
    if text is None:
        return min(default, limit)
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise RequestError("seconds: not a whole number of seconds from 1")
    return min(float(int(text)), limit)
