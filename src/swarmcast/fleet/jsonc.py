"""JSON as streaming-utils' own config template writes it: ``//`` and ``/* */`` comments and trailing commas.

How this works: one pass over the text that copies strings untouched (so ``"http://x"`` keeps its slashes),
blanks comments (keeping newlines, so json's line numbers stay right) and drops a comma whose next significant
character closes an object or array. What is left must be strict JSON.
"""

from __future__ import annotations

import json

MAX_CONFIG_BYTES = 8 * 1024 * 1024  # a config file or controller answer past this is refused


class JsoncError(ValueError):
    """The text is not JSON even with comments and trailing commas allowed (message: line and column)."""


def strip(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    pending_comma: int | None = None  # index in ``out`` of a comma that may turn out to be trailing
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            pending_comma = None
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise JsoncError(f"line {text.count(chr(10), 0, i) + 1}: comment /* is never closed")
            comment = text[i : j + 2]
            out.append("".join(ch if ch == "\n" else " " for ch in comment))
            i = j + 2
        elif c == ",":
            pending_comma = len(out)
            out.append(c)
            i += 1
        elif c in "}]":
            if pending_comma is not None:
                out[pending_comma] = " "
            pending_comma = None
            out.append(c)
            i += 1
        else:
            if not c.isspace():
                pending_comma = None
            out.append(c)
            i += 1
    return "".join(out)


def loads(text: str) -> object:
    try:
        return json.loads(strip(text))
    except json.JSONDecodeError as error:
        raise JsoncError(f"line {error.lineno} column {error.colno}: {error.msg}") from None
