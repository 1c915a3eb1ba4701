"""The registry's write token: every write carries ``Authorization: Bearer <token>`` (docs/registry.md, "API").

The comparison is constant-time (``hmac.compare_digest``) so the answer's timing tells nothing about how much
of a guess was right; a missing or wrong token is a 401 in the API's JSON shape, the same for both (no hint
whether a token was sent). Reads of public data need no token. Other parts (controller.py) call
``require_token`` the same way.
"""

from __future__ import annotations

import hmac
import json

from aiohttp import web

MAX_TOKEN_HEADER = 1024  # characters of an Authorization header we compare at all


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("Authorization", "")
    if len(header) > MAX_TOKEN_HEADER:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authorized(request: web.Request, token: str) -> bool:
    given = bearer(request)
    # aiohttp hands bytes that are not UTF-8 over as surrogates: encode them back rather than fail on them.
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def require_token(request: web.Request, token: str) -> None:
    """Raise a 401 (JSON, with ``WWW-Authenticate: Bearer``) unless the request carries the write token."""
    if not authorized(request, token):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "this is a write: it needs Authorization: Bearer <the registry's token>"}),
            content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="swarmcast registry"'},
        )  # fmt: skip
