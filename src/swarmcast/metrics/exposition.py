"""The Prometheus text format out of a registry, and the registries themselves (one per web application)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from swarmcast import VERSION_CODE, __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` of ``registry``: the Prometheus text format 0.0.4, or OpenMetrics when ``accept``
    (the scraper's Accept header) asks for it, as prometheus-client's own HTTP server chooses."""
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415 - only nodes that are scraped load it

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _BuildInfo:
    def __init__(self, role: str) -> None:
        self.role = role

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        family = GaugeMetricFamily("swarmcast_build_info", "swarmcast's version; always 1",
                                   labels=("version", "revision", "role"))  # fmt: skip
        family.add_metric((__version__, str(VERSION_CODE), self.role), 1)
        yield family


def build_info_collector(role: str) -> Collector:
    """``swarmcast_build_info{version, revision, role} 1``; ``role``: source, support, startup, engine, registry."""
    return _BuildInfo(role)


def new_registry(collectors: Iterable[Collector], *, process: bool = True) -> CollectorRegistry:
    """A registry of its own holding ``collectors`` (plus the process's CPU, memory and file descriptors)."""
    from prometheus_client import CollectorRegistry, ProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
    return registry
