"""Prometheus metrics of a server process (install with ``pip install 'torchannels[metrics]'``).

The collector reads the hub's counters and registries when scraped, so the
fan-out path pays only for integer increments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import tornado.web

from ..hub import Hub
from .listener import HubHTTPServer

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("metrics need prometheus_client: pip install 'torchannels[metrics]'") from exc


class HubCollector:
    """A Prometheus collector over one :class:`~torchannels.Hub`."""

    def __init__(self, hub: Hub, listener: HubHTTPServer | None = None) -> None:
        self.hub = hub
        self.listener = listener  # the public port's server, for its refusals

    def collect(self) -> Iterator[Any]:
        hub = self.hub
        connections = GaugeMetricFamily(
            "torchannels_connections", "Live subscriber connections.", labels=["transport"]
        )
        for transport, count in sorted(hub.connection_counts().items()):
            connections.add_metric([transport], count)
        yield connections
        yield GaugeMetricFamily(
            "torchannels_subscriptions",
            "Live subscriptions (connection x channel) in this process.",
            value=hub.subscription_count(),
        )
        stats = hub.stats
        for name, help_text, value in (
            ("published", "Messages published through this process.", stats.published),
            ("delivered", "Message frames handed to subscribers.", stats.delivered),
            ("resets", "Reset frames sent to subscribers.", stats.resets),
            ("slow_clients_dropped", "Clients cut off for falling behind.", stats.slow_dropped),
            (
                "failed_publishes",
                "Queued publishes and set_states the broker failed to store.",
                hub.broker.failed_publishes,
            ),
        ):
            yield CounterMetricFamily(f"torchannels_{name}", help_text, value=value)
        if self.listener is not None:
            refused = CounterMetricFamily(
                "torchannels_refused_connections",
                "Connections (and proxied requests) refused over a connection limit.",
                labels=["limit"],
            )
            refused.add_metric(["max_connections"], self.listener.refused_connections)
            refused.add_metric(["max_connections_per_ip"], self.listener.limits.refusals)
            yield refused


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics`` in the Prometheus text format."""

    def initialize(self, hub: Hub) -> None:
        registry = self.application.settings.get("torchannels_registry")
        if registry is None:
            registry = CollectorRegistry()
            listener = self.application.settings.get("torchannels_listener")
            registry.register(HubCollector(hub, listener))
            self.application.settings["torchannels_registry"] = registry
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.registry))
