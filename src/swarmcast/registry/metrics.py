"""The registry's own ``/metrics`` (Prometheus text format, prometheus-client), one collector registry per app.

Counters move as requests arrive (requests by route and status, heartbeats, registrations, nodes the sweeper
marked gone); the gauges (streams live and off the air, nodes by role and state) are read from the database
at scrape time, so they are right whichever registry process wrote the rows. Route labels are the route's
pattern (``/api/nodes/{node_id}/heartbeat``), never the path, so no client can grow the label set.
``swarmcast_build_info``, the process collector and the choice of text format or OpenMetrics (by the
scraper's Accept header) are the nodes' own (swarmcast.metrics), so one dashboard reads both.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import Counter, Gauge

from swarmcast.metrics.exposition import build_info_collector, exposition, new_registry
from swarmcast.registry import queries
from swarmcast.registry.state import STATE_KEY


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = new_registry([build_info_collector("registry")])
        self.requests = Counter("swarmcast_registry_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "code"], registry=self.registry)  # fmt: skip
        self.heartbeats = Counter("swarmcast_registry_heartbeats", "heartbeats received from known nodes",
                                  registry=self.registry)  # fmt: skip
        self.registrations = Counter("swarmcast_registry_node_registrations", "nodes registered, by role",
                                     ["role"], registry=self.registry)  # fmt: skip
        self.marked_gone = Counter("swarmcast_registry_nodes_marked_gone",
                                   "live nodes marked gone after missing heartbeats", registry=self.registry)
        self.streams = Gauge("swarmcast_registry_streams", "streams stored, live (a source carries it) or not",
                             ["state"], registry=self.registry)  # fmt: skip
        self.nodes = Gauge("swarmcast_registry_nodes", "nodes stored, by role and state (live, gone, left)",
                           ["role", "state"], registry=self.registry)  # fmt: skip
        self.scrape_seconds = Gauge("swarmcast_registry_scrape_duration_seconds",
                                    "seconds the last /metrics spent reading the database", registry=self.registry)

    def count_request(self, method: str, route: str, code: int) -> None:
        self.requests.labels(method=method, route=route, code=str(code)).inc()

    async def render(self, request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        started = time.monotonic()
        total, live = await state.db.run(queries.count_streams)
        by_role_state = await state.db.run(queries.count_nodes)
        self.streams.labels(state="live").set(live)
        self.streams.labels(state="off_air").set(total - live)
        for role in queries.ROLES:
            for node_state in queries.STATES:
                self.nodes.labels(role=role, state=node_state).set(by_role_state.get((role, node_state), 0))
        self.scrape_seconds.set(time.monotonic() - started)
        body, content_type = exposition(self.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})


METRICS_KEY = web.AppKey("registry_metrics", RegistryMetrics)


def add_routes(app: web.Application) -> None:
    app[METRICS_KEY] = metrics = RegistryMetrics()
    app.router.add_get("/metrics", metrics.render)
