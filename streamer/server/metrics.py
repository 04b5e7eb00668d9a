"""``GET /metrics``: the server's Prometheus metrics, in a registry of its own (no globals)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import gc_collector, platform_collector, process_collector

from streamer.server.message import Message

if TYPE_CHECKING:
    from streamer.server.hub import Hub, Stream, Subscriber

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# a window's end to its send: tens of ms when idle, seconds when the server falls behind
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The ``emostream_*`` metrics plus process, platform and garbage-collector metrics.

    It observes the hub (:class:`~streamer.server.hub.HubObserver`); ingest and uploads report to
    :meth:`ingest_bytes` and :meth:`upload`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.streams = Gauge("emostream_streams_active", "Live streams produced by this server", registry=r)
        self.subscribers = Gauge("emostream_subscribers_active", "Connected subscribers (per stream and feeds)",
                                 registry=r)
        self.windows = Counter("emostream_windows_total", "Window messages published", registry=r)
        self.ingest = Counter("emostream_ingest_bytes_total", "Audio bytes received on /ingest", registry=r)
        self.drops = Counter("emostream_dropped_subscribers_total", "Subscribers dropped for being too slow",
                             registry=r)
        self.latency = Histogram("emostream_window_latency_seconds",
                                 "From the arrival of a window's last sample to its send",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.uploads = Counter("emostream_uploads_total", "POST /label answers by status code", ["status"],
                               registry=r)
        self.requests = Counter("emostream_requests_total", "HTTP requests and WebSocket connections by route",
                                ["route"], registry=r)
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)

    def bind(self, hub: "Hub") -> None:
        """Read the live gauges off ``hub`` at every scrape."""
        self.streams.set_function(hub.live_count)
        self.subscribers.set_function(hub.subscriber_count)

    # HubObserver

    def published(self, stream: "Stream", message: Message) -> None:
        """Count windows; observe the latency of those whose arrival time is known."""
        if message.type != "window":
            return
        self.windows.inc()
        if stream.arrival is None:
            return
        end = message.wire().get("end") if message.event is None else _end_of(message.event)
        if end is None:
            return
        arrived = stream.arrival(float(end))
        if arrived is not None:
            self.latency.observe(max(0.0, time.monotonic() - arrived))

    def dropped(self, subscriber: "Subscriber") -> None:
        """Count a dropped subscriber."""
        self.drops.inc()

    # reported by the server's parts

    def ingest_bytes(self, n: int) -> None:
        """Audio bytes received."""
        self.ingest.inc(n)

    def upload(self, status: int) -> None:
        """An upload answered with ``status``."""
        self.uploads.labels(status=str(status)).inc()

    def request(self, route: str) -> None:
        """A request or connection to ``route`` (a known route, else ``other``)."""
        self.requests.labels(route=route).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)


def _end_of(event: object) -> float | None:
    if isinstance(event, dict):
        return event.get("end")
    return getattr(event, "end", None)
