"""HTTP to the registry, bounded: every request limited in time (``REQUEST_TIMEOUT``) and in the bytes read
(``MAX_RESPONSE_BYTES``), redirects never followed, every failure one :class:`RegistryError` with a one-line reason.
Used by the node's registry client (client.py) and the engine's lookups (bootstrap.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

MAX_RESPONSE_BYTES = 64 * 1024  # a JSON answer of the registry; transport files are read by bootstrap.py
REQUEST_TIMEOUT = 5.0  # one request, connect to last byte


class RegistryError(Exception):
    """The registry could not be reached, or its answer is not what the contract promises; the message says which."""


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, RegistryError past ``limit`` bytes (checked as it arrives: a registry can lie in Content-Length)."""
    if (response.content_length or 0) > limit:
        raise RegistryError(f"answer of {response.content_length} bytes, more than {limit}")
    data = bytearray()
    while chunk := await response.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"answer of more than {limit} bytes")
    return bytes(data)


def decode_json(data: bytes) -> object:
    """JSON, RegistryError otherwise (deep nesting included: ``json`` raises RecursionError on it)."""
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise RegistryError(f"answer is not JSON: {type(error).__name__}") from None


def error_text(answer: object, status: int) -> str:
    """The registry's ``{"error": ...}`` line, cut short, or the status."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return " ".join(str(answer["error"]).split())[:200]
    return f"HTTP {status}"


async def request_json(session: aiohttp.ClientSession, method: str, url: str, *, headers: Mapping[str, str],
                       body: object = None, limit: int = MAX_RESPONSE_BYTES) -> tuple[int, object]:  # fmt: skip
    """One request with a JSON body; (status, decoded answer or None). RegistryError when unreachable or garbage.

    The session's timeout bounds it; redirects are not followed (a registry sends none, and following one would
    carry the token to wherever it points)."""
    try:
        async with session.request(method, url, json=body, headers=headers, allow_redirects=False) as response:
            data = await read_bounded(response, limit)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
        raise RegistryError(f"{type(error).__name__} {error}".strip()[:300]) from None
    answer = decode_json(data) if status != 204 else None
    return status, answer


def client_session(timeout: float = REQUEST_TIMEOUT) -> aiohttp.ClientSession:
    # sock_read too: a registry that sends headers and then trickles (or nothing) is cut off like one that hangs.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout, sock_read=timeout),
                                 trust_env=False, raise_for_status=False)  # fmt: skip
