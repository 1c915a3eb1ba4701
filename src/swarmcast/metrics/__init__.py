"""Prometheus metrics: ``/metrics`` on every node role and on the engine, and the helpers the registry uses.

How this works. Nothing is counted twice: the collectors (metrics/collectors.py) read the stats objects the
nodes keep anyway (``SwarmStats``, the choker, the store, the host's refusals, the engine's sessions) when
Prometheus scrapes, and build the metric families from them then. Each web application has its own
``CollectorRegistry`` (never the library's global one), so several nodes in one process (the tests) never collide.
The histograms (startup, delay) are the one thing filled as it happens, by a plain-Python histogram
(metrics/histogram.py) the engine owns; prometheus-client itself is imported at the first scrape only.

For the registry (or any other aiohttp app): ``exposition(registry)`` -> ``(body, content_type)``, and
``build_info_collector(role)`` for ``swarmcast_build_info``. Metric names: docs/metrics.md.
"""

from __future__ import annotations

from swarmcast.metrics.exposition import build_info_collector, exposition, new_registry

__all__ = ["build_info_collector", "exposition", "new_registry"]
