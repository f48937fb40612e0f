"""Prometheus metrics of a server process (install with ``pip install 'torchannels[metrics]'``).

The collector reads the hub's counters and registries when scraped, so the
fan-out path pays only for integer increments.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import tornado.web

from ..hub import Hub
from ..outbox import OutboxStats
from ..webhook_stats import DROP_REASONS, LATENCY_BUCKETS, WebhookStats
from .listener import HubHTTPServer

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
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
            (
                "publish_duplicates",
                "Publishes whose idempotency key was used already (nothing published).",
                stats.publish_duplicates,
            ),
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
        if hub.lifecycle is not None:
            yield from webhook_metrics(hub.lifecycle.stats)
        if hub.outbox is not None:
            yield from outbox_metrics(hub.outbox.stats)


def outbox_metrics(stats: OutboxStats) -> Iterator[Any]:
    """The outbox consumer's families (docs/outbox.md#metrics)."""
    yield CounterMetricFamily(
        "torchannels_outbox_published",
        "Outbox rows this process published and took off the outbox.",
        value=stats.published,
    )
    yield CounterMetricFamily(
        "torchannels_outbox_dead",
        "Outbox rows this process moved to the dead-letter table.",
        value=stats.dead,
    )
    yield GaugeMetricFamily(
        "torchannels_outbox_backlog_rows",
        "Outbox rows waiting to be published (as last read, at most a second ago).",
        value=stats.backlog_rows,
    )
    yield GaugeMetricFamily(
        "torchannels_outbox_oldest_seconds",
        "Age of the oldest outbox row waiting, in seconds (0 when none waits).",
        value=stats.oldest_age or 0.0,
    )
    yield GaugeMetricFamily(
        "torchannels_outbox_connected",
        "1 while the outbox consumer is connected to PostgreSQL, else 0.",
        value=int(stats.connected),
    )


def webhook_metrics(stats: WebhookStats) -> Iterator[Any]:
    """The lifecycle webhooks' families (docs/api.md#webhooks)."""
    for name, help_text, value in (
        ("queued", "Webhook events this process queued.", stats.queued),
        ("sent", "Webhook events this process delivered (answered 2xx).", stats.sent),
    ):
        yield CounterMetricFamily(f"torchannels_webhook_events_{name}", help_text, value=value)
    yield CounterMetricFamily(
        "torchannels_webhook_retries",
        "Webhook POSTs that failed and were tried again.",
        value=stats.retries,
    )
    dropped = CounterMetricFamily(
        "torchannels_webhook_events_dropped",
        "Webhook events dropped: queue full, retried past --webhook-retry-for, refused (4xx).",
        labels=["reason"],
    )
    for reason in DROP_REASONS:
        dropped.add_metric([reason], stats.dropped[reason])
    yield dropped
    yield GaugeMetricFamily(
        "torchannels_webhook_queue_length",
        "Webhook events waiting (every process's, as last read).",
        value=stats.queue_length,
    )
    yield GaugeMetricFamily(
        "torchannels_webhook_sending",
        "1 while this process holds the webhook sender's lease.",
        value=int(stats.sending),
    )
    latency = HistogramMetricFamily(
        "torchannels_webhook_delivery_seconds",
        "Seconds from a webhook event's time to its delivery (2xx).",
        buckets=[
            (_bound(bound), count)
            for bound, count in zip(LATENCY_BUCKETS, stats.latency_buckets, strict=True)
        ],
        sum_value=stats.latency_sum,
    )
    yield latency


def _bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


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
