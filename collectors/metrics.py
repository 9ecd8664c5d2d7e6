"""Prometheus metrics of a collector process (served on the proxy's ``/metrics``).

Each collector owns a :class:`CollectorMetrics` with its own registry, so several collectors in
one process (tests, an app with two SDK hooks) never clash on metric names. Counters are declared
without the ``_total`` suffix (prometheus_client appends it), as in :mod:`monitor.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from collectors.dead_letter import DeadLetterCollector

__all__ = ["CollectorMetrics", "DROP_REASONS", "CONTENT_TYPE_LATEST", "publish_shipper"]

DROP_REASONS = (
    "queue_full",
    "sampled_out",
    "too_large",
    "bad_json",
    "bad_response",
    "unsupported_content",
    "no_image",
    "bad_image",
    "upstream_error",
    "redaction_failed",
    "redacted_out",
    "spool_full",
    "spool_error",
    "internal_error",
    "shutdown",
)


class CollectorMetrics:
    def __init__(self, source: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.source = source
        r = self.registry
        self.requests = Counter(
            "vlmwatch_collector_requests", "Requests seen by the collector", ["source", "route"], registry=r
        )
        self.dropped = Counter(
            "vlmwatch_collector_samples_dropped", "Samples lost, by reason", ["source", "reason"], registry=r
        )
        self.spooled = Counter(
            "vlmwatch_collector_samples_spooled", "Samples accepted by the spool (fsync'd)", ["source"], registry=r
        )
        self.queue_depth = Gauge(
            "vlmwatch_collector_queue_depth", "Samples waiting in the hand-off queue", ["source"], registry=r
        )
        self.upstream_errors = Counter(
            "vlmwatch_proxy_upstream_errors",
            "Upstream failures answered with 502 or a closed connection, by kind",
            ["kind"],
            registry=r,
        )
        self.spool_bytes = Gauge("vlmwatch_spool_bytes", "Bytes in the spool lane", ["source"], registry=r)
        self.shipped = Counter("vlmwatch_shipper_samples_shipped", "Samples stored by the shipper", registry=r)
        self.ship_errors = Counter("vlmwatch_shipper_errors", "Failed shipping rounds", registry=r)
        self.ship_backlog = Gauge("vlmwatch_shipper_backlog_bytes", "Spool bytes not yet shipped", registry=r)
        self.queue_depth.labels(source).set(0)  # exported from the start, not from the first sample
        self._shipper_values: Any = None
        for reason in DROP_REASONS:  # expose zeros so dashboards see every reason
            self.dropped.labels(source, reason)
        self._drop_children = {reason: self.dropped.labels(source, reason) for reason in DROP_REASONS}
        self._route_children: dict[str, Counter] = {}
        self._dead_letters: DeadLetterCollector | None = None

    def watch_spool(self, root: str | Path) -> None:
        """Expose the dead letters of every lane under the spool ``root`` (``vlmwatch_spool_dead_letters_total``)."""
        if self._dead_letters is None:
            self._dead_letters = DeadLetterCollector()
            self.registry.register(self._dead_letters)
        self._dead_letters.watch(root)

    def drop(self, reason: str, n: int = 1) -> None:
        child = self._drop_children.get(reason)
        if child is None:
            child = self._drop_children[reason] = self.dropped.labels(self.source, reason)
        child.inc(n)

    def dropped_count(self, reason: str) -> float:
        return float(self._drop_children[reason]._value.get()) if reason in self._drop_children else 0.0

    def request(self, route: str) -> None:
        child = self._route_children.get(route)
        if child is None:
            if len(self._route_children) >= 256:  # unbounded label sets would grow memory forever
                route = "other"
            child = self._route_children.get(route) or self.requests.labels(self.source, route)
            self._route_children[route] = child
        child.inc()

    def mirror_shipper(self, values: Any) -> None:
        """Serve the counters of a shipper in a child process: ``values`` is the shared array
        ``[shipped, errors, backlog bytes]`` it keeps up to date (:func:`publish_shipper`)."""
        self._shipper_values = values

    def render(self) -> bytes:
        v = self._shipper_values
        if v is not None:  # a child restarted from zero reads as a counter reset, as Prometheus expects
            self.shipped._value.set(v[0])
            self.ship_errors._value.set(v[1])
            self.ship_backlog.set(v[2])
        return generate_latest(self.registry)


def publish_shipper(metrics: CollectorMetrics, values: Any) -> None:
    """In the shipper's process: copy its counters into the array the collector serves."""
    values[0] = metrics.shipped._value.get()
    values[1] = metrics.ship_errors._value.get()
    values[2] = metrics.ship_backlog._value.get()
