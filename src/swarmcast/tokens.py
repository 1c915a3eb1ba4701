"""Token checks every HTTP surface shares (the registry's API and controller, a node's /metrics), and the names
of the environment variables that carry tokens.

A neutral module so that metrics/ and the registry client need not import the registry server. How a check
works: a header longer than ``MAX_TOKEN_HEADER`` is not compared at all; the given text is turned back into
its raw bytes with ``surrogateescape`` (aiohttp hands bytes that are not UTF-8 over as lone surrogates, which a
plain ``.encode()`` refuses with UnicodeEncodeError: a 500 and a traceback per request) and compared with
``hmac.compare_digest``, so a wrong token of any shape is a plain "no" and the timing tells nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

MAX_TOKEN_HEADER = 1024  # characters of an Authorization / X-Token header (or ?token=) we compare at all

# The registry's admin (fleet) token: ``swarmcast registry --token`` (its default).
REGISTRY_TOKEN_ENV = "SWARMCAST_REGISTRY_TOKEN"  # noqa: S105 - the variable's name, not a token
# The registry's node token: ``swarmcast registry --node-token`` (its default).
REGISTRY_NODE_TOKEN_ENV = "SWARMCAST_REGISTRY_NODE_TOKEN"  # noqa: S105 - the variable's name, not a token
# What a node, engine or broadcaster sends when registering: ``--registry-token`` (its default): the registry's
# node token, under the variable the registry itself reads it from, so one machine can run both and never hand
# nodes the admin token by accident.
TOKEN_ENV = REGISTRY_NODE_TOKEN_ENV


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token``: constant time, capped in length, never raising on odd bytes."""
    if given is None or not given or len(given) > MAX_TOKEN_HEADER:
        return False
    try:
        raw = _raw(given)
    except UnicodeEncodeError:  # a surrogate that was not an escaped byte: not a token
        return False
    return hmac.compare_digest(raw, _raw(token))


def matches_any(given: str | None, tokens: Iterable[str | None]) -> bool:
    """Whether ``given`` is one of ``tokens`` (None entries skipped); every one is compared, in constant time."""
    found = False
    for token in tokens:
        if token is not None and matches(given, token):
            found = True
    return found


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None (absent, another scheme, or over the cap)."""
    header = headers.get("Authorization", "")
    if len(header) > MAX_TOKEN_HEADER:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
