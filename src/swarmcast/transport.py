"""The transport file (``<name>.acelive``): the broadcast's descriptor, its content id, and its keys.

The transport file is exactly the bencoded descriptor dictionary (docs/protocol.md lists the keys). The content
id is the SHA-1 of those bytes, so it doubles as a BitTorrent ``info_hash`` for any tracker, and anyone who
fetched a descriptor from an untrusted peer can check it against the id they asked for. The descriptor holds
the broadcast's Ed25519 public key; every piece is signed with the matching private key (the ``.sauth`` file).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarmcast import bencoding
from swarmcast.discovery.metatracker_protocol import check_metatracker_url, format_node_address, parse_node_address
from swarmcast.wire.messages import MAX_METADATA_SIZE, MAX_PIECE_SIZE, PieceFlags

FORMAT_VERSION = 1
SIGNATURE_SCHEME = "ed25519"
CATEGORIES = (
    "informational", "entertaining", "educational", "movies", "documentaries", "sport", "fashion", "music",
    "regional", "ethnic", "religion", "teleshop", "erotic_18_plus", "other_18_plus", "cyber_games", "amateur",
    "webcam", "kids", "series", "promotion",
)  # fmt: skip
QUALITIES = ("SD", "HD")
_PIECE_SIGNING_CONTEXT = b"swarmcast piece v1\x00"
_INDEX_FLAGS = struct.Struct(">QB")
_KNOWN_KEYS = frozenset(
    k.encode()
    for k in ("swarmcast", "name", "title", "piece_size", "bitrate", "public_key", "signature", "quality",
              "categories", "trackers", "content_type", "provider_key", "startup_nodes", "metatrackers",
              "hls_manifest", "hls_base_url")
)  # fmt: skip
# The transport file names at most this many start nodes and metatrackers (each entry is checked as well).
MAX_STARTUP_NODES = 16
MAX_METATRACKERS = 8
MAX_HLS_URL_CHARS = 2048  # hls_manifest and hls_base_url


class TransportError(ValueError):
    """A transport file that cannot be used; the message names the key and the bad value."""


@dataclass(frozen=True)
class Descriptor:
    name: str
    title: str
    piece_size: int  # the largest piece the source will cut, in bytes
    bitrate: int  # bytes per second
    public_key: bytes  # raw Ed25519, 32 bytes
    quality: str = "SD"
    categories: tuple[str, ...] = ()
    trackers: tuple[str, ...] = ()
    provider_key: str = ""
    content_type: str = "video/mp2t"
    # Optional keys, left out of the encoding when empty: a broadcast without them keeps its content id.
    startup_nodes: tuple[tuple[str, int], ...] = ()  # --startup-node: engines dial these first while starting
    metatrackers: tuple[str, ...] = ()  # --metatracker: asked for more trackers and start nodes (docs/protocol.md)
    # An HLS broadcast's origin (docs/protocol.md, "HLS broadcasts"): engines may fetch segments there and verify
    # them against the signed segment index. Absent for TS broadcasts and hidden (--hide-hls-manifest) ones.
    hls_manifest: str = ""
    hls_base_url: str = ""  # --base-url: segment URIs of the index are relative to it (else to hls_manifest)
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def encode(self) -> bytes:
        fields: dict[bytes, object] = {
            b"swarmcast": FORMAT_VERSION,
            b"name": self.name.encode(),
            b"title": self.title.encode(),
            b"piece_size": self.piece_size,
            b"bitrate": self.bitrate,
            b"public_key": self.public_key,
            b"signature": SIGNATURE_SCHEME.encode(),
            b"quality": self.quality.encode(),
            b"categories": [c.encode() for c in self.categories],
            b"trackers": [t.encode() for t in self.trackers],
            b"content_type": self.content_type.encode(),
        }
        if self.provider_key:
            fields[b"provider_key"] = self.provider_key.encode()
        if self.startup_nodes:
            fields[b"startup_nodes"] = [format_node_address(a).encode() for a in self.startup_nodes]
        if self.metatrackers:
            fields[b"metatrackers"] = [m.encode() for m in self.metatrackers]
        if self.hls_manifest:
            fields[b"hls_manifest"] = self.hls_manifest.encode()
        if self.hls_base_url:
            fields[b"hls_base_url"] = self.hls_base_url.encode()
        return bencoding.encode(fields)

    @property
    def content_id(self) -> bytes:
        return hashlib.sha1(self.encode(), usedforsecurity=False).digest()

    @property
    def infohash(self) -> str:
        return self.content_id.hex()

    @classmethod
    def decode(cls, data: bytes) -> Descriptor:
        if len(data) > MAX_METADATA_SIZE:
            raise TransportError(f"transport file is {len(data)} bytes, more than {MAX_METADATA_SIZE}")
        try:
            fields = bencoding.decode(data, max_size=MAX_METADATA_SIZE)
        except bencoding.BencodeError as error:
            raise TransportError(f"transport file: {error}") from None
        if not isinstance(fields, dict):
            raise TransportError("transport file is not a bencoded dictionary")
        unknown = sorted(k.decode(errors="replace") for k in fields if k not in _KNOWN_KEYS)
        if unknown:
            raise TransportError(f"transport file has unknown key(s): {', '.join(repr(k) for k in unknown)}")
        version = _get_int(fields, "swarmcast")
        if version != FORMAT_VERSION:
            raise TransportError(f"transport file format 'swarmcast' = {version}, this engine reads {FORMAT_VERSION}")
        scheme = _get_str(fields, "signature")
        if scheme != SIGNATURE_SCHEME:
            raise TransportError(f"transport file key 'signature' = {scheme!r}, expected {SIGNATURE_SCHEME!r}")
        descriptor = cls(
            name=_get_str(fields, "name"),
            title=_get_str(fields, "title"),
            piece_size=_get_int(fields, "piece_size"),
            bitrate=_get_int(fields, "bitrate"),
            public_key=_get_bytes(fields, "public_key"),
            quality=_get_str(fields, "quality"),
            categories=tuple(_get_str_list(fields, "categories")),
            trackers=tuple(_get_str_list(fields, "trackers")),
            provider_key=_get_str(fields, "provider_key") if b"provider_key" in fields else "",
            content_type=_get_str(fields, "content_type"),
            startup_nodes=_get_startup_nodes(fields),
            metatrackers=_get_metatrackers(fields),
            hls_manifest=_get_hls_url(fields, "hls_manifest"),
            hls_base_url=_get_hls_url(fields, "hls_base_url"),
        )
        if not 188 <= descriptor.piece_size <= MAX_PIECE_SIZE:
            raise TransportError(f"transport file key 'piece_size' = {descriptor.piece_size} out of range")
        if len(descriptor.public_key) != 32:
            raise TransportError("transport file key 'public_key' is not a 32-byte Ed25519 key")
        if descriptor.encode() != data:
            # Unknown keys or non-canonical encoding would give two ids for one broadcast.
            raise TransportError("transport file is not in canonical form (unknown keys or ordering)")
        return descriptor


def _get(fields: dict[bytes, object], key: str) -> object:
    if key.encode() not in fields:
        raise TransportError(f"transport file lacks key {key!r}")
    return fields[key.encode()]


def _get_int(fields: dict[bytes, object], key: str) -> int:
    value = _get(fields, key)
    if not isinstance(value, int) or value < 0:
        raise TransportError(f"transport file key {key!r} = {value!r} is not a non-negative integer")
    return value


def _get_bytes(fields: dict[bytes, object], key: str) -> bytes:
    value = _get(fields, key)
    if not isinstance(value, bytes):
        raise TransportError(f"transport file key {key!r} = {value!r} is not a byte string")
    return value


def _get_str(fields: dict[bytes, object], key: str) -> str:
    try:
        return _get_bytes(fields, key).decode()
    except UnicodeDecodeError:
        raise TransportError(f"transport file key {key!r} is not UTF-8") from None


def _get_str_list(fields: dict[bytes, object], key: str) -> list[str]:
    value = _get(fields, key)
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise TransportError(f"transport file key {key!r} = {value!r} is not a list of strings")
    try:
        return [v.decode() for v in value]
    except UnicodeDecodeError:
        raise TransportError(f"transport file key {key!r} holds a string that is not UTF-8") from None


def _get_bounded_list(fields: dict[bytes, object], key: str, limit: int) -> list[str]:
    if key.encode() not in fields:
        return []
    values = _get_str_list(fields, key)
    if not values:
        raise TransportError(f"transport file key {key!r} is an empty list (leave the key out instead)")
    if len(values) > limit:
        raise TransportError(f"transport file key {key!r} has {len(values)} entries, more than {limit}")
    return values


def _get_startup_nodes(fields: dict[bytes, object]) -> tuple[tuple[str, int], ...]:
    nodes = []
    for text in _get_bounded_list(fields, "startup_nodes", MAX_STARTUP_NODES):
        try:
            address = parse_node_address(text)
        except ValueError as error:
            raise TransportError(f"transport file key 'startup_nodes': {error}") from None
        if format_node_address(address) != text:
            raise TransportError(f"transport file key 'startup_nodes': {text!r} is not in canonical form")
        nodes.append(address)
    if len(set(nodes)) != len(nodes):
        raise TransportError("transport file key 'startup_nodes' names an address twice")
    return tuple(nodes)


def _get_metatrackers(fields: dict[bytes, object]) -> tuple[str, ...]:
    urls = _get_bounded_list(fields, "metatrackers", MAX_METATRACKERS)
    for url in urls:
        try:
            check_metatracker_url(url)
        except ValueError as error:
            raise TransportError(f"transport file key 'metatrackers': {error}") from None
    if len(set(urls)) != len(urls):
        raise TransportError("transport file key 'metatrackers' names a URL twice")
    return tuple(urls)


def check_hls_url(url: str) -> str:
    """``url`` if it can be an HLS origin URL (http(s), a host, bounded); ValueError saying why not."""
    if len(url) > MAX_HLS_URL_CHARS:
        raise ValueError(f"URL of {len(url)} characters (more than {MAX_HLS_URL_CHARS})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError as error:
        raise ValueError(f"{url[:200]!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url[:200]!r} is not an http:// or https:// URL")
    return url


def _get_hls_url(fields: dict[bytes, object], key: str) -> str:
    if key.encode() not in fields:
        return ""
    value = _get_str(fields, key)
    try:
        return check_hls_url(value)
    except ValueError as error:
        raise TransportError(f"transport file key {key!r}: {error}") from None


# -- keys and piece signatures -------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The broadcast's private key from ``path`` (PEM, PKCS#8), created with mode 0600 when absent."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - a source's; viewers never load it

    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TransportError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return key


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - see load_or_create_key

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signed_bytes(content_id: bytes, index: int, flags: PieceFlags, data: bytes) -> bytes:
    return _PIECE_SIGNING_CONTEXT + content_id + _INDEX_FLAGS.pack(index, int(flags)) + data


def sign_piece(key: Ed25519PrivateKey, content_id: bytes, index: int, flags: PieceFlags, data: bytes) -> bytes:
    return key.sign(_signed_bytes(content_id, index, flags, data))


class PieceVerifier:
    """Checks piece signatures against the broadcast's public key (parsed once)."""

    def __init__(self, public_key: bytes, content_id: bytes) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self._content_id = content_id

    def verify(self, index: int, flags: PieceFlags, data: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, _signed_bytes(self._content_id, index, flags, data))
        except InvalidSignature:
            return False
        return True
