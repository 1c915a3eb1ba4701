"""The metatracker's HTTP API, sans-IO: the query URL, the JSON answer, start-node addresses, the schedule.

How this works. A node or engine asks ``GET <metatracker URL>?infohash=<40 lowercase hex>``; the answer is a JSON
object ``{"trackers": [URL, ...], "startup_nodes": ["IP:PORT", ...], "interval": SECONDS}`` (docs/protocol.md,
"Metatracker"). Everything in an answer comes from a server we do not control: the body is capped before it is
parsed, the lists are capped, each entry is checked on its own (a bad one is skipped, so one typo in the
operator's file does not hide the rest), and the interval is clamped. :class:`MetatrackerSchedule` says when to ask
again: the answer's interval after a success, exponential backoff with jitter after a failure.

The same address and URL checks serve the transport file's ``startup_nodes`` and ``metatrackers`` keys
(transport.py) and the metatracker server's config file (metatracker_server.py).
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from swarmcast.discovery.tracker_client import check_tracker_url

__all__ = [
    "MetatrackerAnswer",
    "MetatrackerError",
    "MetatrackerSchedule",
    "canonical_node_address",
    "check_metatracker_url",
    "encode_answer",
    "format_node_address",
    "parse_answer",
    "parse_node_address",
    "query_url",
]

NodeAddress = tuple[str, int]

MAX_ANSWER_BYTES: Final = 64 * 1024  # a metatracker answer; more is refused unread
MAX_ANSWER_TRACKERS: Final = 16  # trackers taken from one answer (the rest are ignored)
MAX_ANSWER_STARTUP_NODES: Final = 32  # start nodes taken from one answer (the rest are ignored)
MAX_URL_LENGTH: Final = 512  # characters of a tracker or metatracker URL
MAX_ADDRESS_LENGTH: Final = 64  # characters of "IP:PORT" ("[v6]:PORT" fits)
# Interval bounds: a metatracker cannot make us ask more often than MIN_INTERVAL, nor forget us for longer than
# MAX_INTERVAL; an answer without an interval is asked again after DEFAULT_INTERVAL.
MIN_INTERVAL: Final = 5.0
MAX_INTERVAL: Final = 3600.0
DEFAULT_INTERVAL: Final = 300.0
# After a failure: FIRST_BACKOFF, doubling, at most MAX_BACKOFF, each spread by BACKOFF_JITTER.
FIRST_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 60.0
BACKOFF_JITTER: Final = 0.1


class MetatrackerError(ValueError):
    """A metatracker answer (or request) we cannot use; the message says what was wrong."""


def parse_node_address(text: str) -> NodeAddress:
    """``IP:PORT`` or ``[IPv6]:PORT`` with an IP literal (never a host name: nothing to resolve, nothing to
    redirect) and a port in 1..65535; ValueError naming the text otherwise."""
    if len(text) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"start node {text[:MAX_ADDRESS_LENGTH]!r}... is longer than {MAX_ADDRESS_LENGTH} characters")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        version = 6
    else:
        host, sep, port_text = text.rpartition(":")
        version = 4
    if not sep or not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        raise ValueError(f"start node {text!r} is not IP:PORT")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"start node {text!r} is not IP:PORT (an IP address, not a host name)") from None
    if ip.version != version:
        raise ValueError(f"start node {text!r}: an IPv6 address is written [IP]:PORT")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"start node {text!r}: port {port} is not in 1..65535")
    return str(ip), port


def format_node_address(address: NodeAddress) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical_node_address(address: NodeAddress) -> NodeAddress:
    """The address as the transport file writes it (``ipaddress``'s text); ValueError when it is no IP:PORT."""
    return parse_node_address(format_node_address((str(ipaddress.ip_address(address[0])), address[1])))


def check_metatracker_url(url: str) -> str:
    """The URL itself, or ValueError naming it: http(s), a host, a valid port, no fragment, bounded length."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"metatracker URL {url[:80]!r}... is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"metatracker URL {url!r} holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError past 65535
    except ValueError as error:
        raise ValueError(f"metatracker URL {url!r}: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"metatracker URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"metatracker URL {url!r} has no host")
    if port == 0:
        raise ValueError(f"metatracker URL {url!r} has port 0")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"metatracker URL {url!r} has a fragment")
    return url


def check_announce_url(url: str) -> str:
    """A tracker URL a metatracker may hand out (or a config may name): what the announcer accepts, bounded."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"tracker URL {url[:80]!r}... is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"tracker URL {url!r} holds spaces, control or non-ASCII characters")
    try:
        check_tracker_url(url)
        port = urlsplit(url).port
    except ValueError as error:
        raise ValueError(str(error)) from None
    if port == 0:
        raise ValueError(f"tracker URL {url!r} has port 0")
    return url


def query_url(url: str, info_hash: bytes) -> str:
    """``url`` with ``infohash=<40 lowercase hex>`` added to its query."""
    if len(info_hash) != 20:
        raise ValueError(f"info_hash must be 20 bytes, got {len(info_hash)}")
    separator = "&" if "?" in url else "?"
    if url.endswith(("?", "&")):
        separator = ""
    return f"{url}{separator}infohash={info_hash.hex()}"


@dataclass(frozen=True, slots=True)
class MetatrackerAnswer:
    trackers: tuple[str, ...] = ()
    startup_nodes: tuple[NodeAddress, ...] = ()
    interval: float = DEFAULT_INTERVAL  # clamped to MIN_INTERVAL..MAX_INTERVAL
    skipped: int = 0  # entries that were not valid (or past the caps) and were ignored


def clamp_interval(value: float) -> float:
    return min(max(value, MIN_INTERVAL), MAX_INTERVAL)


def parse_answer(body: bytes) -> MetatrackerAnswer:
    """A metatracker's answer, checked; MetatrackerError for anything that is not a usable JSON object."""
    if len(body) > MAX_ANSWER_BYTES:
        raise MetatrackerError(f"answer of {len(body)} bytes, more than {MAX_ANSWER_BYTES}")
    try:
        # Python's json has no nesting bound, but the size cap above bounds the depth to what fits in 64 KiB,
        # which its recursion handles; RecursionError is caught all the same.
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MetatrackerError(f"answer is not JSON: {type(error).__name__}") from None
    if not isinstance(value, dict):
        raise MetatrackerError(f"answer is a JSON {type(value).__name__}, not an object")
    trackers_value = value.get("trackers", [])
    nodes_value = value.get("startup_nodes", [])
    interval_value = value.get("interval", DEFAULT_INTERVAL)
    if not isinstance(trackers_value, list):
        raise MetatrackerError("answer key 'trackers' is not a list")
    if not isinstance(nodes_value, list):
        raise MetatrackerError("answer key 'startup_nodes' is not a list")
    if isinstance(interval_value, bool) or not isinstance(interval_value, int | float):
        raise MetatrackerError(f"answer key 'interval' = {str(interval_value)[:40]!r} is not a number")
    skipped = 0
    trackers: dict[str, None] = {}
    for item in trackers_value:
        if len(trackers) >= MAX_ANSWER_TRACKERS or not isinstance(item, str):
            skipped += 1
            continue
        try:
            trackers[check_announce_url(item)] = None
        except ValueError:
            skipped += 1
    nodes: dict[NodeAddress, None] = {}
    for item in nodes_value:
        if len(nodes) >= MAX_ANSWER_STARTUP_NODES or not isinstance(item, str):
            skipped += 1
            continue
        try:
            nodes[parse_node_address(item)] = None
        except ValueError:
            skipped += 1
    try:
        interval = float(interval_value)  # a 400-digit integer overflows; 1e999 is inf, clamped below
    except OverflowError:
        interval = MAX_INTERVAL
    if math.isnan(interval):
        interval = DEFAULT_INTERVAL
    return MetatrackerAnswer(tuple(trackers), tuple(nodes), clamp_interval(interval), skipped)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def encode_answer(answer: MetatrackerAnswer) -> bytes:
    """The server's side: the JSON a metatracker sends (the interval as a whole number of seconds)."""
    return json.dumps({
        "trackers": list(answer.trackers),
        "startup_nodes": [format_node_address(a) for a in answer.startup_nodes],
        "interval": round(answer.interval),
    }).encode()  # fmt: skip


class MetatrackerSchedule:
    """When to ask one metatracker next. Sans-IO: every method takes ``now``."""

    def __init__(self, *, rng: random.Random | None = None, first_backoff: float = FIRST_BACKOFF,
                 max_backoff: float = MAX_BACKOFF) -> None:  # fmt: skip
        if not 0 < first_backoff <= max_backoff:
            raise ValueError(f"need 0 < first_backoff <= max_backoff, got {first_backoff} and {max_backoff}")
        self._rng = rng or random.Random()
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.next_at = 0.0  # due at once: at join
        self.failures = 0  # consecutive
        self.last_success: float | None = None

    def delay(self, now: float) -> float:
        return max(0.0, self.next_at - now)

    def on_success(self, now: float, interval: float) -> float:
        self.failures = 0
        self.last_success = now
        wait = clamp_interval(interval)
        self.next_at = now + wait
        return wait

    def on_failure(self, now: float) -> float:
        self.failures += 1
        base = min(self.first_backoff * 2.0 ** min(self.failures - 1, 32), self.max_backoff)
        wait = base * self._rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
        self.next_at = now + wait
        return wait
