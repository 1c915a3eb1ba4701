"""Bencoding (BEP 3) through the bencoder.pyx library, behind one typed seam.

Every bencoded thing we read comes from the network or a file a user handed us, so ``decode`` turns whatever the
library raises into ``BencodeError`` and refuses input over a caller-given size before parsing it.
"""

from __future__ import annotations

from typing import cast

import bencoder

Bencodable = int | bytes | str | list["Bencodable"] | dict[bytes, "Bencodable"]


class BencodeError(ValueError):
    pass


def encode(value: object) -> bytes:
    return cast(bytes, bencoder.bencode(value))


def decode(data: bytes, *, max_size: int) -> object:
    if len(data) > max_size:
        raise BencodeError(f"bencoded value of {len(data)} bytes exceeds {max_size}")
    try:
        return cast(object, bencoder.bdecode(data))
    except Exception as error:  # the library raises BTFailure, but also TypeError/ValueError on odd input
        raise BencodeError(f"invalid bencoding: {error}") from None
