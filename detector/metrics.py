"""Prometheus metrics of the detector, served at ``http://<metrics_host>:<metrics_port>/metrics``.

The endpoint serves this module's registry together with prometheus-client's default
registry, where Bytewax's Kafka connector keeps ``bytewax_kafka_consumer_lag`` (and where
the client library keeps its ``python_*`` and ``process_*`` metrics). Processes of a
cluster on one host take the next ports in process order; port 0 disables the endpoint.

Every label value is bounded: decisions, dead-letter reasons, label sources (mapped onto
analyst, chargeback, presumed and other), model names and versions, fraud or legit.

=============================================== ==================================================
Metric                                          Meaning
=============================================== ==================================================
``fraudstream_transactions_total{decision}``    Transactions decided: allow, review or block.
``fraudstream_alerts_total{decision}``          Alerts published: review or block.
``fraudstream_dead_letters_total{reason}``      Records sent to the dead-letter topic, by
                                                ``RejectReason`` value.
``fraudstream_labels_total{source}``            Labels the models learned from: analyst,
                                                chargeback, presumed (no chargeback in time)
                                                or other.
``fraudstream_processing_latency_seconds``      Histogram: Kafka record timestamp (producer
                                                or broker clock) to decision; the time the
                                                record was parsed when it has no timestamp.
``fraudstream_event_time_lag_seconds``          Histogram: transaction timestamp to decision
                                                (large on replays and catch-ups).
``fraudstream_score``                           Histogram of the deciding model's scores.
``fraudstream_label_delay_seconds{source}``     Histogram: transaction time to the label's
                                                ``labeled_at``, for explicit labels (presumed
                                                labels come after a fixed delay, not counted).
``fraudstream_model_info{model,version,``       1 per model; ``deciding`` is "true" for the
``deciding}``                                   model whose scores decide.
``fraudstream_model_transactions_scored_total`` Transactions a model scored (decided or in
``{model}``                                     shadow), from its last status.
``fraudstream_model_labels_learned_total``      Labels a model learned, by ``label`` (fraud,
``{model,label}``                               legit), from its last status.
``fraudstream_model_auc{model,version}``        ROC AUC over the quality window (absent until
                                                the window holds both classes).
``fraudstream_model_average_precision``         Average precision over the quality window.
``{model,version}``
``fraudstream_model_alert_precision``           Share of the window's alerted transactions that
``{model,version}``                             were fraud (absent without alerts).
``fraudstream_model_alert_recall``              Share of the window's frauds that were alerted
``{model,version}``                             (absent without frauds).
``fraudstream_model_quality_window_labels``     Labelled transactions in the quality window.
``{model,version}``
``fraudstream_model_review_threshold{model}``   Score at or above which the model reviews.
``fraudstream_model_block_threshold{model}``    Score at or above which the model blocks.
``fraudstream_model_status_timestamp_seconds``  Unix time of the model's last status.
``{model}``
``fraudstream_state_cards``                     Cards with state in this process (all workers).
``fraudstream_state_terminals``                 Terminals with state in this process.
``fraudstream_state_pending_labels``            Scored transactions whose features are kept for
                                                a label, summed over the terminals of this
                                                process.
``fraudstream_state_parked_labels``             Labels that arrived before their transaction
                                                and wait for it (at most LABEL_PARK_SECONDS;
                                                then dead-lettered as unknown_transaction).
``bytewax_kafka_consumer_lag{step_id,topic,``   Bytewax: records between the broker's last
``partition}``                                  offset and the consumed one, per partition
                                                (updated every second, once a partition has
                                                been read from).
=============================================== ==================================================

The model metrics are read at scrape time from the last ``ModelStatus`` of each model, so
they appear in the process that runs the model step, after its first status. Counters
start at zero with each process; the model counters carry the totals kept in the model's
recovered state.
"""

from __future__ import annotations

import bisect
import itertools
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from detector.contracts import ModelStatus, RejectReason

DECISIONS = ("allow", "review", "block")
ALERT_DECISIONS = ("review", "block")
LABEL_SOURCES = ("analyst", "chargeback", "presumed", "other")

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
EVENT_TIME_LAG_BUCKETS = (
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    6 * HOUR,
    DAY,
    3 * DAY,
    7 * DAY,
)
SCORE_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 20)), 0.99, 0.999, 1.0)
LABEL_DELAY_BUCKETS = (
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    6 * HOUR,
    DAY,
    2 * DAY,
    3 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    45 * DAY,
    60 * DAY,
    90 * DAY,
)


def label_source(source: str) -> str:
    """The bounded metric label of a label's source (sources are free-form names)."""
    return source if source in LABEL_SOURCES else "other"


class _WorkerSizes:
    """State sizes held by one worker thread (only that thread writes them)."""

    __slots__ = ("cards", "parked", "pending", "terminals")

    def __init__(self) -> None:
        self.cards = 0
        self.terminals = 0
        self.pending = 0
        self.parked = 0


class StateSizes:
    """Entries held by the keyed steps, one slot per worker thread, summed at scrape time.

    A worker updates its own slot without a lock; Bytewax runs each key's logic on one
    worker thread.
    """

    def __init__(self) -> None:
        # By thread id: Bytewax's workers are threads Python did not start, whose
        # ``threading.local`` values do not last from one call into Python to the next.
        self._slots: dict[int, _WorkerSizes] = {}
        self._lock = threading.Lock()
        # Features waiting for labels in an on-disk store: its row count, read at scrape
        self.stored_pending: Callable[[], int] | None = None

    def worker(self) -> _WorkerSizes:
        """The calling thread's slot."""
        thread = threading.get_ident()
        slot = self._slots.get(thread)
        if slot is None:
            with self._lock:
                slot = self._slots.setdefault(thread, _WorkerSizes())
        return slot

    def totals(self) -> tuple[int, int, int, int]:
        """(cards, terminals, pending labels, parked labels) over this process's workers."""
        with self._lock:
            slots = list(self._slots.values())
        return (
            sum(s.cards for s in slots),
            sum(s.terminals for s in slots),
            sum(s.pending for s in slots) + (self.stored_pending() if self.stored_pending else 0),
            sum(s.parked for s in slots),
        )


class _StateCollector(Collector):
    def __init__(self, sizes: StateSizes) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[Metric]:
        cards, terminals, pending, parked = self._sizes.totals()
        yield GaugeMetricFamily(
            "fraudstream_state_cards", "Cards with state in this process.", value=cards
        )
        yield GaugeMetricFamily(
            "fraudstream_state_terminals", "Terminals with state in this process.", value=terminals
        )
        yield GaugeMetricFamily(
            "fraudstream_state_pending_labels",
            "Scored transactions whose features are kept for a label, in this process.",
            value=pending,
        )
        yield GaugeMetricFamily(
            "fraudstream_state_parked_labels",
            "Labels waiting for a transaction not seen yet, in this process.",
            value=parked,
        )


class _ModelCollector(Collector):
    """The model metrics, read from the last status of each model at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, ModelStatus] = {}

    def update(self, status: ModelStatus) -> None:
        with self._lock:
            self._last[status.model_name] = status

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            statuses = list(self._last.values())
        info = GaugeMetricFamily(
            "fraudstream_model_info",
            "1 per model of the detector; deciding is true for the model that decides.",
            labels=["model", "version", "deciding"],
        )
        scored = CounterMetricFamily(
            "fraudstream_model_transactions_scored",
            "Transactions the model scored (deciding or in shadow).",
            labels=["model"],
        )
        learned = CounterMetricFamily(
            "fraudstream_model_labels_learned",
            "Labels the model learned from, by class.",
            labels=["model", "label"],
        )
        quality = {
            name: GaugeMetricFamily(f"fraudstream_model_{name}", text, labels=["model", "version"])
            for name, text in (
                ("auc", "ROC AUC of the model's scores over its quality window."),
                ("average_precision", "Average precision over the quality window."),
                ("alert_precision", "Share of the window's alerted transactions that were fraud."),
                ("alert_recall", "Share of the window's frauds that the model alerted."),
                ("quality_window_labels", "Labelled transactions in the quality window."),
            )
        }
        review = GaugeMetricFamily(
            "fraudstream_model_review_threshold",
            "Score at or above which the model reviews.",
            labels=["model"],
        )
        block = GaugeMetricFamily(
            "fraudstream_model_block_threshold",
            "Score at or above which the model blocks.",
            labels=["model"],
        )
        emitted = GaugeMetricFamily(
            "fraudstream_model_status_timestamp_seconds",
            "Unix time of the model's last status.",
            labels=["model"],
        )
        for s in statuses:
            model, version = s.model_name, s.model_version
            info.add_metric([model, version, "true" if s.deciding else "false"], 1)
            scored.add_metric([model], s.transactions_scored)
            for label in ("fraud", "legit"):
                learned.add_metric([model, label], s.labels_learned.get(label, 0))
            q = s.quality
            figures = {
                "auc": q.auc,
                "average_precision": q.average_precision,
                "alert_precision": q.alert_precision,
                "alert_recall": q.alert_recall,
                "quality_window_labels": q.window,
            }
            for name, value in figures.items():
                if value is not None:
                    quality[name].add_metric([model, version], value)
            review.add_metric([model], s.review_threshold)
            block.add_metric([model], s.block_threshold)
            emitted.add_metric([model], s.emitted_at.timestamp())
        yield from (info, scored, learned, *quality.values(), review, block, emitted)


class FastHistogram(Collector):
    """A histogram for the per-transaction path, rendered at scrape time.

    prometheus-client's ``Histogram.observe`` takes a lock and scans its buckets (about
    3 µs); this one bisects into plain counters (well under 1 µs). The dataflow's worker
    threads update it under the GIL: an observation may rarely be lost to a race between
    threads, and no series ever goes backwards.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(b for b in buckets if b != float("inf"))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative = list(itertools.accumulate(self.counts))
        buckets = [(floatToGoString(b), c) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


class DetectorMetrics:
    """The detector's registry and the instruments the dataflow updates.

    The dataflow uses the process-wide ``METRICS``; tests build their own.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.transactions = Counter(
            "fraudstream_transactions",
            "Transactions decided, by decision.",
            ["decision"],
            registry=r,
        )
        self.alerts = Counter(
            "fraudstream_alerts", "Alerts published, by decision.", ["decision"], registry=r
        )
        self.dead_letters = Counter(
            "fraudstream_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.labels = Counter(
            "fraudstream_labels",
            "Labels the models learned from, by source (analyst, chargeback, presumed, other).",
            ["source"],
            registry=r,
        )
        self.latency = FastHistogram(
            "fraudstream_processing_latency_seconds",
            "Kafka record timestamp to decision.",
            LATENCY_BUCKETS,
        )
        self.event_time_lag = FastHistogram(
            "fraudstream_event_time_lag_seconds",
            "Transaction timestamp to decision.",
            EVENT_TIME_LAG_BUCKETS,
        )
        self.score = FastHistogram(
            "fraudstream_score", "Scores of the deciding model.", SCORE_BUCKETS
        )
        for histogram in (self.latency, self.event_time_lag, self.score):
            r.register(histogram)
        self.label_delay = Histogram(
            "fraudstream_label_delay_seconds",
            "Transaction time to label time, by source (explicit labels).",
            ["source"],
            buckets=LABEL_DELAY_BUCKETS,
            registry=r,
        )
        self.models = _ModelCollector()
        self.state = StateSizes()
        r.register(self.models)
        r.register(_StateCollector(self.state))
        # Every bounded series exists from the start (at 0), so that rates and alert rules
        # see them before the first event; the children are resolved once, here.
        self._decided = {d: self.transactions.labels(d) for d in DECISIONS}
        self._alerted = {d: self.alerts.labels(d) for d in ALERT_DECISIONS}
        self._dead = {reason: self.dead_letters.labels(reason.value) for reason in RejectReason}
        self._labelled = {s: self.labels.labels(s) for s in LABEL_SOURCES}
        self._delays = {s: self.label_delay.labels(s) for s in LABEL_SOURCES if s != "presumed"}

    def decided(
        self, decision: str, score: float, *, received: float, event_time: float, now: float
    ) -> None:
        """One transaction decided at ``now`` (all times in epoch seconds)."""
        self._decided[decision].inc()
        alerted = self._alerted.get(decision)
        if alerted is not None:
            alerted.inc()
        self.score.observe(score)
        self.latency.observe(max(0.0, now - received))
        self.event_time_lag.observe(max(0.0, now - event_time))

    def dead_letter(self, reason: RejectReason) -> None:
        self._dead[reason].inc()

    def learned(self, source: str) -> None:
        """A label the models learned from."""
        self._labelled[label_source(source)].inc()

    def label_delay_observed(self, source: str, seconds: float) -> None:
        """The delay of an explicit label (presumed labels are skipped)."""
        delays = self._delays.get(label_source(source))
        if delays is not None:
            delays.observe(max(0.0, seconds))

    def model_status(self, status: ModelStatus) -> None:
        self.models.update(status)


METRICS = DetectorMetrics()
"""The process's detector metrics (the dataflow updates these)."""


class _Combined(Collector):
    """Several registries as one, for a single /metrics page."""

    def __init__(self, registries: Iterable[CollectorRegistry]) -> None:
        self._registries = tuple(registries)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no name checks across registries: each checks its own

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


class MetricsServerError(RuntimeError):
    """The metrics endpoint could not start (port in use, unknown host, ...)."""


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics endpoint."""

    host: str
    port: int
    _server: object

    def stop(self) -> None:
        shutdown = getattr(self._server, "shutdown", None)
        close = getattr(self._server, "server_close", None)
        if shutdown is not None:
            shutdown()
        if close is not None:
            close()


def metrics_port(base_port: int, process_id: int | None, cluster: Sequence[str] = ()) -> int:
    """The port of process ``process_id`` of a cluster (``cluster``: host:port of each).

    Processes on one host cannot share a port: each takes ``base_port`` plus the number
    of processes before it on the same host. Processes on hosts of their own (pods) all
    serve ``base_port``.
    """
    offset = 0
    if cluster and process_id:
        host = cluster[process_id].rsplit(":", 1)[0] if process_id < len(cluster) else None
        offset = sum(1 for a in cluster[:process_id] if a.rsplit(":", 1)[0] == host)
    port = base_port + offset
    if port > 65535:
        raise MetricsServerError(
            f"metrics port {base_port} + {offset} processes before this one on its host = "
            f"{port} is beyond 65535: lower FRAUDSTREAM_METRICS_PORT, or set it to 0 to "
            "disable the endpoint"
        )
    return port


def serve(
    host: str,
    port: int,
    metrics: DetectorMetrics = METRICS,
    *,
    include_default: bool = True,
) -> MetricsServer:
    """Serve ``metrics`` (and the default registry, Bytewax's) at ``http://host:port/metrics``.

    Raises ``MetricsServerError`` with a plain explanation when the address is taken or
    cannot be bound.
    """
    combined = CollectorRegistry(auto_describe=False)
    registries = [metrics.registry, REGISTRY] if include_default else [metrics.registry]
    combined.register(_Combined(registries))
    try:
        server, _thread = start_http_server(port, addr=host, registry=combined)
    except OSError as error:
        raise MetricsServerError(_bind_failure(host, port, error)) from error
    bound_port = server.server_address[1]
    return MetricsServer(host, int(bound_port), server)


def _bind_failure(host: str, port: int, error: OSError) -> str:
    import errno

    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot serve the detector's metrics on {where}: the port is already in use "
            f"(another detector, or another program). Set FRAUDSTREAM_METRICS_PORT to a free "
            f"port, or to 0 to disable the endpoint."
        )
    if isinstance(error, socket.gaierror):
        return (
            f"cannot serve the detector's metrics on {where}: unknown host {host!r} "
            f"({error.strerror}). Check FRAUDSTREAM_METRICS_HOST."
        )
    return (
        f"cannot serve the detector's metrics on {where}: {error.strerror or error}. "
        f"Check FRAUDSTREAM_METRICS_HOST and FRAUDSTREAM_METRICS_PORT (0 disables)."
    )
