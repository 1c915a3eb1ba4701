"""A minimal MaxMind DB writer for tests: country records for a few networks, IPv4 and IPv6.

Follows the MaxMind DB file format 2.0: a binary search tree over the address bits (IPv6, 128 bits; IPv4 lives at
``::a.b.c.d``, the first 96 bits zero, where readers look for it), 24-bit records, a 16-byte zero separator, the
data section, then the metadata map after ``\\xab\\xcd\\xefMaxMind.com``. Values are encoded with the format's
control bytes (type in the top 3 bits, size in the low 5; types past 7 are "extended": type 0 plus a second byte).
Only what GeoLite2-Country-like records need: maps, UTF-8 strings, unsigned integers, arrays.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_RECORD_BYTES = 3  # 24-bit records


def _control(type_number: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, extra = 30, struct.pack(">H", size - 285)
    else:
        head, extra = 31, struct.pack(">I", size - 65821)[1:]
    if type_number <= 7:
        return bytes([(type_number << 5) | head]) + extra
    return bytes([head, type_number - 7]) + extra


class Uint(int):
    """An unsigned integer of a given MaxMind type (5 uint16, 6 uint32, 9 uint64), as the metadata requires."""

    type_number = 6

    def __new__(cls, value: int, type_number: int) -> Uint:
        self = super().__new__(cls, value)
        self.type_number = type_number
        return self


def encode(value: object) -> bytes:
    if isinstance(value, Uint):
        data = int(value).to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        return _control(value.type_number, len(data)) + data
    if isinstance(value, str):
        data = value.encode()
        return _control(2, len(data)) + data
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, int):
        data = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        type_number = 5 if value < 1 << 16 else 6 if value < 1 << 32 else 9
        return _control(type_number, len(data)) + data
    if isinstance(value, dict):
        body = b"".join(encode(str(k)) + encode(v) for k, v in value.items())
        return _control(7, len(value)) + body
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(item) for item in value)
    raise TypeError(f"cannot encode {value!r}")


def _bits(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[int]:
    if network.version == 4:
        value, prefix = int(network.network_address), 96 + network.prefixlen
    else:
        value, prefix = int(network.network_address), network.prefixlen
    return [(value >> (127 - i)) & 1 for i in range(prefix)]


def write_country_db(path: Path, countries: dict[str, str]) -> Path:
    """``countries``: network (CIDR, v4 or v6) -> ISO code. Writes a .mmdb readable by the maxminddb library."""
    # The tree as nested lists: a node is [left, right]; a leaf is None (no data) or a data offset (int).
    root: list[object] = [None, None]
    data = b""
    offsets: dict[str, int] = {}
    # Shorter prefixes first: a longer one inside them then splits their leaf instead of being overwritten.
    networks = sorted((len(_bits(ipaddress.ip_network(c, strict=False))), c, code) for c, code in countries.items())
    for _length, cidr, code in networks:
        if code not in offsets:
            offsets[code] = len(data)
            data += encode({"country": {"iso_code": code}})
        node = root
        bits = _bits(ipaddress.ip_network(cidr, strict=False))
        for depth, bit in enumerate(bits):
            if depth == len(bits) - 1:
                node[bit] = ("data", offsets[code])
                break
            child = node[bit]
            if not isinstance(child, list):
                child = [child, child]  # split a leaf (no data, or a shorter network's data) in two
                node[bit] = child
            node = child
    # Number the nodes breadth first, then write each as two records.
    order: list[list[object]] = []
    queue = [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        queue.extend(child for child in node if isinstance(child, list))
    numbers = {id(node): i for i, node in enumerate(order)}
    count = len(order)

    def record(child: object) -> int:
        if isinstance(child, list):
            return numbers[id(child)]
        if isinstance(child, tuple):
            return count + 16 + int(child[1])
        return count  # no data

    tree = b"".join(record(n[0]).to_bytes(_RECORD_BYTES, "big") + record(n[1]).to_bytes(_RECORD_BYTES, "big")
                    for n in order)  # fmt: skip
    metadata = {
        "node_count": Uint(count, 6),
        "record_size": Uint(_RECORD_BYTES * 8, 5),
        "ip_version": Uint(6, 5),
        "database_type": "swarmcast-test-country",
        "languages": ["en"],
        "binary_format_major_version": Uint(2, 5),
        "binary_format_minor_version": Uint(0, 5),
        "build_epoch": Uint(1_700_000_000, 9),
        "description": {"en": "test countries"},
    }
    path.write_bytes(tree + bytes(16) + data + _METADATA_MARKER + encode(metadata))
    return path
