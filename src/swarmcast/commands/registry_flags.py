"""``--registry URL`` and its companions on the node roles, the engine and the broadcaster (docs/registry.md).

Each command adds the flags with :func:`add_registry_options` and, when it runs, wraps its main coroutine with
:func:`with_registry`: the node then registers, heartbeats and deregisters beside its own work (registry/client.py)
and never waits for the registry. Registering needs the registry's node token (``--registry-token`` or
``$SWARMCAST_REGISTRY_NODE_TOKEN``; the admin token works too, but a leak of it reads every key); without one a
node does not register (an engine still looks streams up).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from swarmcast.registry.client import (
    Describe,
    Figures,
    RegistryClient,
    RegistryEndpoint,
    check_registry_url,
    endpoint_from,
    registered,
)
from swarmcast.registry.names import NAME_PATTERN, is_content_id
from swarmcast.registry.reports import HasNodeState, NodeReporter, reachable_host, registry_name
from swarmcast.tokens import TOKEN_ENV

log = logging.getLogger("swarmcast.registry.client")

Main = Callable[[asyncio.Event], Awaitable[None]]


def registry_url(text: str) -> str:
    try:
        return check_registry_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def stream_name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text) or is_content_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a registry name: 1..64 of a-z 0-9 . _ - (not starting "
                                         "with a dot, not 40 hex digits)")  # fmt: skip
    return text


def add_registry_options(parser: argparse.ArgumentParser, *, source: bool = False, engine: bool = False) -> None:
    group = parser.add_argument_group("registry (docs/registry.md)")
    group.add_argument("--registry", type=registry_url, metavar="URL",
                       help="register with the swarmcast registry at URL (http(s)://HOST:PORT), send it heartbeats "
                            "with this node's figures and deregister on a clean stop; the node never waits for it "
                            "(default: none)")  # fmt: skip
    group.add_argument("--registry-token", metavar="TOKEN",
                       help=f"the registry's node token (its --node-token), needed to register (default: ${TOKEN_ENV})")
    group.add_argument("--registry-host", metavar="HOST",
                       help="the host peers reach this node at, as registered (default: --bind, or when that is "
                            "0.0.0.0 the local address of the route to the registry)")  # fmt: skip
    if source:
        group.add_argument("--registry-name", type=stream_name, metavar="NAME",
                           help="the broadcast's registry name, what engines play it by (/ace/getstream?id=NAME) "
                                "(default: --name in lower case, other characters as '-')")  # fmt: skip
    if engine:
        group.add_argument("--bootstrap", type=Path, metavar="FILE",
                           help="a static JSON file of streams (name, transport file, peers) this engine plays by "
                                "name or content id, asked before the registry (format: docs/registry.md) "
                                "(default: none)")  # fmt: skip


def endpoint_from_args(args: argparse.Namespace) -> RegistryEndpoint | None:
    return endpoint_from(getattr(args, "registry", None), getattr(args, "registry_token", None))


def advertised_host(args: argparse.Namespace, bind: str) -> str:
    endpoint = endpoint_from_args(args)
    if args.registry_host:
        return str(args.registry_host)
    return reachable_host(bind, endpoint.url if endpoint is not None else "http://127.0.0.1")


def with_registry(main: Main, endpoint: RegistryEndpoint | None, describe: Describe, figures: Figures) -> Main:
    """``main`` with the node registered beside it (``main`` itself when there is no registry or no token)."""
    if endpoint is None:
        return main
    if endpoint.token is None:
        log.warning("--registry %s without a write token (--registry-token or $%s): not registering",
                    endpoint.url, TOKEN_ENV)  # fmt: skip
        return main

    async def registered_main(stop: asyncio.Event) -> None:
        async with registered(RegistryClient(endpoint, describe, figures), stop):
            await main(stop)

    return registered_main


def node_main(node: HasNodeState, run: Main, args: argparse.Namespace, *, name: str | None = None) -> Main:
    """A node role's ``run`` with its registration (``name``: a source's file name, its default registry name)."""
    endpoint = endpoint_from_args(args)
    if endpoint is None:
        return run
    stream = getattr(args, "registry_name", None) or (registry_name(name) if name is not None else None)
    reporter = NodeReporter(node, host=advertised_host(args, args.host or args.bind), stream_name=stream)
    return with_registry(run, endpoint, reporter.describe, reporter.figures)
