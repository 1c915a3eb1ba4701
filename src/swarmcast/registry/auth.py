"""The registry's two tokens (docs/registry.md, "Tokens").

- The node token (``--node-token``): what nodes, engines and broadcasters are given as ``--registry-token``.
  It lets them register, send heartbeats, leave and register streams (``/api/nodes*`` writes, ``POST
  /api/streams``), nothing else.
- The admin (fleet) token (``--token``): every controller and admin route (``/controller/*``,
  ``/api/controller/*``: configs with ingest URLs, and the broadcast keys). It is accepted on the node routes too.

So a node that leaks its token leaks no key. The comparison is swarmcast.tokens' (constant time, length
capped, safe on bytes that are not UTF-8); a missing or wrong token is a 401 in the API's JSON shape, the same
for both (no hint whether a token was sent). Reads of public data need no token.
"""

from __future__ import annotations

import json

from aiohttp import web

from swarmcast.tokens import MAX_TOKEN_HEADER, matches_any
from swarmcast.tokens import bearer as _bearer

__all__ = ["MAX_TOKEN_HEADER", "admin_authorized", "bearer", "given_admin_token", "node_authorized",
           "require_node_token"]  # fmt: skip


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    return _bearer(request.headers)


def node_authorized(request: web.Request, node_token: str | None, admin_token: str) -> bool:
    """A node route: the node token or the admin token, as a bearer token."""
    return matches_any(bearer(request), (node_token, admin_token))


def given_admin_token(request: web.Request) -> str | None:
    """The token a controller request carries: ``Authorization: Bearer T``, ``X-Token: T`` or ``?token=T`` (a
    fleet can only put it in its URLs)."""
    return bearer(request) or request.headers.get("X-Token") or request.query.get("token") or None


def admin_authorized(request: web.Request, admin_token: str) -> bool:
    """A controller or admin route: the admin token only (never the node token)."""
    return matches_any(given_admin_token(request), (admin_token,))


def require_node_token(request: web.Request, node_token: str | None, admin_token: str) -> None:
    """Raise a 401 (JSON, with ``WWW-Authenticate: Bearer``) unless the request carries the node or admin token."""
    if not node_authorized(request, node_token, admin_token):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "this is a write: it needs Authorization: Bearer <the registry's node token>"}),
            content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="swarmcast registry"'},
        )  # fmt: skip
