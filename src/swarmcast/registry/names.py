"""What a registry name and a content id look like, for the registry's client side (engine, nodes) without the
server's imports (registry/validate.py pulls in SQLAlchemy through queries.py, which a viewer engine never loads).

The name pattern is the registry's own (validate._STREAM_NAME: tests/unit/test_registry_client.py checks they are
one): lower case, no leading dot, at most 64 characters; a 40-hex string is a content id, never a name.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,63}")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


def is_content_id(text: str) -> bool:
    """40 hex digits, either case (the registry's validate.is_content_id)."""
    return _HEX40.fullmatch(text) is not None
