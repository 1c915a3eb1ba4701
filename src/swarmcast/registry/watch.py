"""How the watch page plays a stream: through the viewer's own engine, else the broadcaster's HLS, else it says why not.

How this works. The page (static/watch.js) first asks the viewer's local engine for its version
(``/webui/api/service?method=get_version`` at ``http://127.0.0.1:6878``, or the loopback address given with
``?engine=``); if it answers, the page plays the engine's ``/ace/manifest.m3u8`` with the parameters chosen here
(:func:`engine_query`), with hls.js. The engine answers those paths with ``Access-Control-Allow-Origin: *``
(swarmcast/http/cors.py). If no engine answers, the page plays the broadcast's HLS origin (:func:`hls_origin`:
a rendition's ``hls`` URL, else the transport file's ``hls_manifest``) when it has one, and otherwise shows
:func:`no_play_reason`.

Which engine parameters: the engine must find the broadcast without help from this registry (the viewer's engine
need not know it). A live support or start node's transport file URL (``/app/get_transport_file?format=raw`` on
its web interface) tells the engine the broadcast and a peer to dial at once, with that node's tracker; a source
is the last choice among nodes (with support nodes it serves only them). With no such node, ``id=<content id>``:
an engine started with ``--registry`` or that finds the broadcast by its trackers plays it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from swarmcast.transport import Descriptor, TransportError

DEFAULT_ENGINE = "http://127.0.0.1:6878"
MAX_URL_CHARS = 2048  # an HLS origin or a node's web interface URL longer than this is not offered to the page
NODE_PREFERENCE = ("start", "support", "source")  # whose transport file the engine is pointed at, best first
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")  # a host name's label (urlsplit lower-cases hostname)


class EngineAddressError(ValueError):
    """``?engine=`` is not an http:// URL of a loopback address with a port."""


def engine_origin(text: str | None) -> str:
    """The engine's origin (``http://host:port``) from ``?engine=``; only loopback hosts (the viewer's *own* engine:
    the page's Content-Security-Policy lets it connect there and nowhere else)."""
    if not text:
        return DEFAULT_ENGINE
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise EngineAddressError(f"engine: {text[:80]!r} is not a URL ({error})") from None
    host = parts.hostname or ""
    if parts.scheme != "http" or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        raise EngineAddressError(f"engine: {text[:80]!r} is not http://HOST:PORT")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise EngineAddressError(f"engine: {host[:80]!r} is not a loopback address (the viewer's own engine)")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(("http", netloc, "", "", ""))


def _origin(scheme: str, netloc: str) -> str | None:
    """``scheme://host[:port]`` rebuilt from a validated IP address or host name and an integer port, else None.
    The origin goes into the watch page's Content-Security-Policy header: whatever else a registered URL holds
    (``;``, spaces, quotes: more directives) must never reach it."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
            return None
        text = host
    else:
        text = f"[{address.compressed}]" if address.version == 6 else address.compressed
    return f"{scheme}://{text}" + (f":{port}" if port is not None else "")


def _http_url(value: object) -> str | None:
    """An http(s) URL for the page: printable ASCII without spaces, no credentials, a valid origin."""
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS or not value.isascii() or not value.isprintable() \
            or " " in value:  # fmt: skip
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or _origin(parts.scheme, parts.netloc) is None:
        return None
    return value


def engine_query(content_id: str, nodes: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """The query of the engine's ``/ace/manifest.m3u8`` for this stream (see the module's docstring)."""
    live = [n for n in nodes if n.get("state") == "live"]
    for role in NODE_PREFERENCE:
        for node in live:
            base = _http_url(node.get("http")) if node.get("role") == role else None
            if base is not None:
                return {"url": base.rstrip("/") + "/app/get_transport_file?format=raw"}
    return {"id": content_id}


def hls_origin(renditions: object, transport: bytes | None) -> str | None:
    """The broadcaster's HLS playlist for browsers without an engine: the first rendition with an ``hls`` URL
    (``swarmcast broadcaster --p2p --registry`` registers each rendition's playlist on its origin there; the
    first is the source rendition), else the transport file's ``hls_manifest``
    (an HLS broadcast that does not hide it)."""
    if isinstance(renditions, list):
        for rendition in renditions:
            url = _http_url(rendition.get("hls")) if isinstance(rendition, dict) else None
            if url is not None:
                return url
    if transport:
        try:
            descriptor = Descriptor.decode(transport)
        except TransportError:
            return None
        return _http_url(descriptor.hls_manifest)
    return None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL :func:`hls_origin` chose (for the page's connect-src), rebuilt from its
    validated parts (:func:`_origin`); a URL that has none is refused (ValueError), never copied."""
    parts = urlsplit(url)
    origin = _origin(parts.scheme, parts.netloc) if parts.scheme in ("http", "https") else None
    if origin is None:
        raise ValueError(f"not an http(s) URL with a valid host and port: {url[:80]!r}")
    return origin


def no_play_reason(engine: str, live: bool) -> str:
    """What the page says when neither the engine nor an HLS origin can play the stream."""
    if not live:
        return "this broadcast is not live now (its source node is gone)"
    return (f"no swarmcast engine answers at {engine}, and this broadcast has no HLS origin a browser could play "
            f"(it is MPEG-TS over P2P only): start a local engine (swarmcast engine) and reload this page")
