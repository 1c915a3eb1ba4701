"""Bencoding (BEP 3): a small strict decoder and encoder of our own.

How this works. Every bencoded thing we read came from the network or from a file a user handed us (transport
files, tracker answers), so ``decode`` is written for hostile input first:

- **No recursion.** Containers being filled are kept on an explicit stack of at most ``MAX_DEPTH`` entries, so
  ``b"l" * 60000`` is an error after ``MAX_DEPTH`` bytes, not a blown C stack.
- **Bounded and linear.** Input over the caller's ``max_size`` is refused before parsing. Every search for a
  terminator (``:`` after a length, ``e`` after an integer) looks at most ``MAX_LENGTH_DIGITS`` /
  ``MAX_INT_DIGITS`` bytes ahead, and every byte is looked at a bounded number of times, so the time is linear in
  the input and a byte-string length is checked against what is left before anything is sliced.
- **Only our error out.** Anything wrong raises :class:`BencodeError` (a ``ValueError``), never ``IndexError``,
  ``RecursionError`` and friends; the fuzz targets in tests/fuzz/targets.py hold us to that.
- **Canonical form, as BEP 3 requires it.** Integers without leading zeros, no ``-0``; dictionary keys are byte
  strings, unique, and (by default) in ascending raw-byte order; nothing after the top-level value. A transport
  file's content id is the SHA-1 of its bytes, so there must be exactly one encoding of each value, and
  ``encode(decode(data)) == data`` holds for every ``data`` that ``decode`` accepts with ``sorted_keys=True``.
  ``sorted_keys=False`` accepts keys in any order (still unique) for tracker answers, where libtorrent and
  Transmission are lenient too and the order changes no meaning.

What we do not accept, on purpose: integers longer than ``MAX_INT_DIGITS`` digits (nothing we read is near 2^64)
and nesting deeper than ``MAX_DEPTH`` (our deepest real value, a tracker's dictionary peer list, is 3 deep).
"""

from __future__ import annotations

from typing import Final

Bencodable = int | bytes | str | list["Bencodable"] | dict[bytes, "Bencodable"]

#: Deepest nesting of lists/dictionaries ``decode`` accepts (and ``encode`` produces).
MAX_DEPTH: Final = 32
#: Longest integer, in digits (a sign not counted): 20 digits hold any unsigned 64-bit value.
MAX_INT_DIGITS: Final = 20
#: Longest byte-string length prefix, in digits; the length is also checked against the bytes left.
MAX_LENGTH_DIGITS: Final = 10

_I, _L, _D, _E, _0, _9 = b"i"[0], b"l"[0], b"d"[0], b"e"[0], b"0"[0], b"9"[0]


class BencodeError(ValueError):
    """The input is not (canonical) bencoding, or is bigger or deeper than we accept."""


class _DictFrame:
    """A dictionary being filled: the key read and waiting for its value, and the last key (for ordering)."""

    __slots__ = ("key", "last", "value")

    def __init__(self) -> None:
        self.value: dict[bytes, object] = {}
        self.key: bytes | None = None
        self.last: bytes | None = None


def decode(data: bytes | bytearray | memoryview, *, max_size: int, sorted_keys: bool = True) -> object:
    """The value bencoded in ``data``: ``int``, ``bytes``, ``list`` or ``dict[bytes, ...]``; else BencodeError."""
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise BencodeError(f"cannot decode a {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise BencodeError(f"bencoded value of {size} bytes exceeds {max_size}")
    stack: list[list[object] | _DictFrame] = []
    top: list[object] | _DictFrame | None = None  # stack[-1], kept in step with it
    pos = 0
    while True:
        if pos >= size:
            raise BencodeError("truncated" if size else "empty input")
        c = data[pos]
        if isinstance(top, _DictFrame) and top.key is None and c != _E and not _0 <= c <= _9:
            raise BencodeError(f"dictionary key at offset {pos} is not a byte string")
        value: object
        if _0 <= c <= _9:
            colon = data.find(b":", pos, pos + MAX_LENGTH_DIGITS + 1)
            if colon < 0:
                raise BencodeError(f"byte-string length at offset {pos} without ':' within {MAX_LENGTH_DIGITS} digits")
            digits = data[pos:colon]
            if not digits.isdigit() or (c == _0 and len(digits) > 1):  # no leading zeros
                raise BencodeError(f"bad byte-string length {digits[:MAX_LENGTH_DIGITS]!r} at offset {pos}")
            start = colon + 1
            end = start + int(digits)
            if end > size:
                raise BencodeError(f"byte string of {int(digits)} bytes at offset {pos} runs past the end")
            value = data[start:end]
            pos = end
        elif c == _I:
            end = data.find(b"e", pos + 1, pos + 3 + MAX_INT_DIGITS)
            if end < 0:
                raise BencodeError(f"integer at offset {pos} without 'e' within {MAX_INT_DIGITS} digits")
            digits = data[pos + 1 : end]
            magnitude = digits[1:] if digits[:1] == b"-" else digits
            if (
                not magnitude.isdigit()
                or len(magnitude) > MAX_INT_DIGITS
                or (magnitude[0] == _0 and (len(magnitude) > 1 or magnitude is not digits))  # 00, 01, -0, -01
            ):
                raise BencodeError(f"bad integer {digits!r} at offset {pos}")
            value = int(digits)
            pos = end + 1
        elif c in (_L, _D):
            if len(stack) >= MAX_DEPTH:
                raise BencodeError(f"nesting deeper than {MAX_DEPTH} at offset {pos}")
            top = [] if c == _L else _DictFrame()
            stack.append(top)
            pos += 1
            continue
        elif c == _E:
            if top is None:
                raise BencodeError(f"'e' at offset {pos} closes nothing")
            if isinstance(top, _DictFrame):
                if top.key is not None:
                    raise BencodeError(f"dictionary key {top.key[:40]!r} without a value")
                value = top.value
            else:
                value = top
            stack.pop()
            pos += 1
            top = stack[-1] if stack else None
        else:
            raise BencodeError(f"unexpected byte {bytes([c])!r} at offset {pos}")

        # A whole value: it is the result, a list item, a dictionary key or a dictionary value.
        if top is None:
            if pos != size:
                raise BencodeError(f"{size - pos} trailing byte(s) after the value")
            return value
        if isinstance(top, _DictFrame):
            if top.key is None:
                assert isinstance(value, bytes)  # checked before parsing it
                if top.last is not None and (value <= top.last if sorted_keys else value in top.value):
                    problem = "duplicate" if value == top.last or value in top.value else "out of canonical order"
                    raise BencodeError(f"dictionary key {value[:40]!r} {problem}")
                top.key = value
            else:
                top.value[top.key] = value
                top.last = top.key
                top.key = None
        else:
            top.append(value)


def encode(value: object) -> bytes:
    """Canonical bencoding of ``value`` (int, bytes, str as UTF-8, list/tuple, dict with bytes or str keys).

    Our own values, so a bad one is a bug: ``TypeError`` for a type bencoding has no form for (``bool`` included,
    to catch mix-ups), ``ValueError`` for nesting deeper than ``MAX_DEPTH`` or two keys that encode the same.
    """
    out: list[bytes] = []
    _encode_into(value, out, 0)
    return b"".join(out)


def _encode_into(value: object, out: list[bytes], depth: int) -> None:
    if isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        raw = value.encode()
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        raise TypeError("bool has no bencoding (use 0 or 1)")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        out.append(b"l")
        for item in value:
            _encode_into(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        items: dict[bytes, object] = {}
        for key, item in value.items():
            raw_key = key.encode() if isinstance(key, str) else key
            if not isinstance(raw_key, bytes):
                raise TypeError(f"dictionary key {key!r} is not bytes or str")
            if raw_key in items:
                raise ValueError(f"dictionary keys encode to the same {raw_key!r}")
            items[raw_key] = item
        out.append(b"d")
        for raw_key in sorted(items):
            out.append(b"%d:" % len(raw_key))
            out.append(raw_key)
            _encode_into(items[raw_key], out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode a {type(value).__name__}")
