"""Prometheus metrics of the review service, served at ``GET /metrics``.

Each app has its own registry (tests build many apps in one process). Counters are
bumped where things happen; the queue figures are read from the database at scrape
time, so they are right even with several API processes behind one database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.fields import CONTROL_ACTIONS, LABELS

log = structlog.get_logger("fraudstream.api")

UNMATCHED_ROUTE = "<unmatched>"
# How a synchronous score request was answered (``api.score``):
SCORE_OUTCOMES = (
    "decided",  # the detector's decision, in time
    "stored",  # the same transaction again: the decision stored before
    "timeout",  # no decision in time: the fallback, degraded
    "unpublished",  # the request could not be published in time: the fallback, degraded
    "conflict",  # decided before from transactions, or with other details: 409
)


@dataclass(frozen=True)
class QueueGauges:
    """What the database says at scrape time."""

    open_alerts: int
    oldest_open_age_seconds: float | None
    outbox_pending: int


class _QueueCollector(Collector):
    """Reads ``QueueGauges`` on each scrape; a failing read drops the gauges, not the scrape."""

    def __init__(self, read: Callable[[], QueueGauges]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Describing without reading keeps registration free of database access.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            gauges = self._read()
        except Exception as error:
            log.warning("queue metrics unavailable", error=str(error)[:200])
            return
        yield GaugeMetricFamily(
            "fraudstream_api_queue_open_alerts",
            "Alerts waiting for an analyst (open, or with an expired claim).",
            value=gauges.open_alerts,
        )
        yield GaugeMetricFamily(
            "fraudstream_api_queue_oldest_open_age_seconds",
            "Age of the oldest open alert (0 when the queue is empty).",
            value=gauges.oldest_open_age_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            "fraudstream_api_outbox_pending",
            "Labels and control messages not yet delivered to Kafka.",
            value=gauges.outbox_pending,
        )


class ApiMetrics:
    """The registry of one app and the instruments the code updates."""

    def __init__(self, read_queue: Callable[[], QueueGauges] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fraudstream_api_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fraudstream_api_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.alerts_ingested = Counter(
            "fraudstream_api_alerts_ingested",
            "Alert records read from Kafka: new, duplicate (already known) or invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.statuses_ingested = Counter(
            "fraudstream_api_model_status_ingested",
            "Model status records read from Kafka: stored or invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.detector_events_ingested = Counter(
            "fraudstream_api_detector_events_ingested",
            "Detector event records read from Kafka: stored (new or replacing an earlier "
            "sighting), unchanged or invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "fraudstream_api_verdicts",
            "Verdicts accepted from analysts, by label.",
            ["label"],
            registry=self.registry,
        )
        self.controls = Counter(
            "fraudstream_api_controls",
            "Control messages requested by admins, by action.",
            ["action"],
            registry=self.registry,
        )
        self.outbox_delivered = Counter(
            "fraudstream_api_outbox_delivered",
            "Outbox records (labels, control messages) acknowledged by Kafka.",
            registry=self.registry,
        )
        self.outbox_failed = Counter(
            "fraudstream_api_outbox_failed",
            "Outbox delivery attempts that failed (retried later).",
            registry=self.registry,
        )
        self.score_latency = Histogram(
            "fraudstream_api_score_duration_seconds",
            "POST /api/score: time to the answer, by outcome (see score_answers).",
            ["outcome"],
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.score_answers = Counter(
            "fraudstream_api_score_answers",
            "POST /api/score answers: decided, stored (asked again), timeout and unpublished "
            "(the fallback, degraded), conflict (409).",
            ["outcome"],
            registry=self.registry,
        )
        self.score_replies = Counter(
            "fraudstream_api_score_replies",
            "Replies read from score-replies: stored (a decision), late (no request waited "
            "for it any more), duplicate, invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.event_streams = Gauge(
            "fraudstream_api_event_streams",
            "Open live-queue event streams (GET /api/events) of this process.",
            registry=self.registry,
        )
        for outcome in SCORE_OUTCOMES:
            self.score_answers.labels(outcome)
            self.score_latency.labels(outcome)
        for outcome in ("stored", "late", "duplicate", "invalid"):
            self.score_replies.labels(outcome)
        for outcome in ("new", "duplicate", "invalid"):
            self.alerts_ingested.labels(outcome)
        for outcome in ("stored", "invalid"):
            self.statuses_ingested.labels(outcome)
        for outcome in ("stored", "unchanged", "invalid"):
            self.detector_events_ingested.labels(outcome)
        for label in LABELS:
            self.verdicts.labels(label)
        for action in CONTROL_ACTIONS:
            self.controls.labels(action)
        if read_queue is not None:
            self.registry.register(_QueueCollector(read_queue))

    def scored(self, outcome: str, seconds: float) -> None:
        self.score_answers.labels(outcome).inc()
        self.score_latency.labels(outcome).observe(seconds)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
