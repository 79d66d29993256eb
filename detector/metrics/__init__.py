"""Prometheus metrics of the detector, served at ``http://<metrics_host>:<metrics_port>/metrics``.

The endpoint serves this module's registry together with prometheus-client's default
registry, where Bytewax's Kafka connector keeps ``bytewax_kafka_consumer_lag`` (and where
the client library keeps its ``python_*`` and ``process_*`` metrics). Processes of a
cluster on one host take the next ports in process order; port 0 disables the endpoint.

Every label value is bounded: decisions, dead-letter reasons, label sources (mapped onto
analyst, chargeback, presumed and other), model names and versions, fraud or legit, the
lists, and the names of the admins' rules.

=============================================== ==================================================
Metric                                          Meaning
=============================================== ==================================================
``fraudstream_transactions_total{decision}``    Transactions decided: allow, review or block.
``fraudstream_alerts_total{decision}``          Alerts published: review or block.
``fraudstream_exploration_alerts_total``        Allowed transactions put up for review as
                                                the exploration sample (not in
                                                ``fraudstream_alerts_total``).
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
``fraudstream_model_auc{model,version}``        ROC AUC over the quality window (absent below
                                                QUALITY_MIN_FRAUDS frauds or QUALITY_MIN_LEGIT
                                                legitimate labels in the window).
``fraudstream_model_average_precision``         Average precision over the quality window
``{model,version}``                             (absent as the AUC).
``fraudstream_model_alert_precision``           Share of the window's alerted transactions that
``{model,version}``                             were fraud (absent below QUALITY_MIN_ALERTS).
``fraudstream_model_alert_recall``              Share of the window's frauds that were alerted
``{model,version}``                             (absent below QUALITY_MIN_FRAUDS).
``fraudstream_model_quality_window_labels``     Labelled transactions in the quality window.
``{model,version}``
``fraudstream_model_quality_window_frauds``     Frauds among them.
``{model,version}``
``fraudstream_model_quality_window_legit``      Legitimate transactions among them.
``{model,version}``
``fraudstream_model_quality_window_alerts``     Labelled transactions that were alerted.
``{model,version}``
``fraudstream_model_review_threshold{model}``   Score at or above which the model reviews.
``fraudstream_model_block_threshold{model}``    Score at or above which the model blocks.
``fraudstream_model_status_timestamp_seconds``  Unix time of the model's last status.
``{model}``
``fraudstream_rule_hits_total{rule,mode}``      Transactions a rule matched, by rule name and
                                                mode (active, shadow).
``fraudstream_rule_errors_total{rule}``         Rule evaluations that failed (not matched).
``fraudstream_list_hits_total{list}``           Decisions an allow or block list entry made.
``fraudstream_blocks_capped_total``             Blocks turned into reviews by the block cap.
``fraudstream_degraded_decisions_total``        Decisions made without a usable model score.
``fraudstream_policy_mode{mode}``               1 for the global mode in force (normal,
                                                review_only, monitor), else 0.
``fraudstream_block_share``                     Share of blocks in the block cap's window.
``fraudstream_max_block_share``                 The block cap (1: no cap).
``fraudstream_block_cap_tripped``               1 while blocks are turned into reviews.
``fraudstream_list_entries{list}``              Entries in force on each list.
``fraudstream_detector_events_total{kind}``     Attacks and drifts noticed (``detector-events``),
                                                by kind: score_shift, terminal_burst,
                                                card_testing, fraud_rate_change,
                                                feature_shift.
``fraudstream_terminals_in_burst``              Terminals with a burst or card testing noticed
                                                in the last BURST_REVIEW_MINUTES (at least a
                                                burst window), whose transactions go to review.
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
recovered state."""

from __future__ import annotations

import time
import typing

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from detector.contracts import (
    LIST_NAMES,
    DetectorEvent,
    DetectorEventKind,
    ModelStatus,
    RejectReason,
)
from detector.metrics.histogram import FastHistogram
from detector.metrics.models import ModelCollector
from detector.metrics.state import StateCollector, StateSizes
from detector.policy import PolicyOutcome

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
        self.exploration_alerts = Counter(
            "fraudstream_exploration_alerts",
            "Allowed transactions put up for review as the exploration sample.",
            registry=r,
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
        self.rule_hits = Counter(
            "fraudstream_rule_hits",
            "Transactions a rule matched, by rule and mode (active, shadow).",
            ["rule", "mode"],
            registry=r,
        )
        self.rule_errors = Counter(
            "fraudstream_rule_errors",
            "Rule evaluations that failed (counted as not matched), by rule.",
            ["rule"],
            registry=r,
        )
        self.list_hits = Counter(
            "fraudstream_list_hits",
            "Decisions an allow or block list entry made, by list.",
            ["list"],
            registry=r,
        )
        self.blocks_capped = Counter(
            "fraudstream_blocks_capped", "Blocks turned into reviews by the block cap.", registry=r
        )
        self.degraded = Counter(
            "fraudstream_degraded_decisions",
            "Decisions made without a usable model score (rules and lists alone).",
            registry=r,
        )
        self.detector_events = Counter(
            "fraudstream_detector_events",
            "Attacks and drifts the detector noticed, by kind.",
            ["kind"],
            registry=r,
        )
        self.in_burst = Gauge(
            "fraudstream_terminals_in_burst",
            "Terminals in a burst (or card testing) now: their transactions go to review.",
            registry=r,
        )
        self.in_burst.set_function(self._terminals_in_burst)
        # terminal -> when its last burst was noticed (wall clock); how long one lasts
        self._bursts: dict[str, float] = {}
        self.burst_seconds = 3600.0
        self.models = ModelCollector()
        self.state = StateSizes()
        r.register(self.models)
        r.register(StateCollector(self.state))
        # Every bounded series exists from the start (at 0), so that rates and alert rules
        # see them before the first event; the children are resolved once, here.
        self._decided = {d: self.transactions.labels(d) for d in DECISIONS}
        self._alerted = {d: self.alerts.labels(d) for d in ALERT_DECISIONS}
        self._dead = {reason: self.dead_letters.labels(reason.value) for reason in RejectReason}
        self._labelled = {s: self.labels.labels(s) for s in LABEL_SOURCES}
        self._delays = {s: self.label_delay.labels(s) for s in LABEL_SOURCES if s != "presumed"}
        self._list_hits = {name: self.list_hits.labels(name) for name in LIST_NAMES}
        self._noticed = {
            kind: self.detector_events.labels(kind) for kind in typing.get_args(DetectorEventKind)
        }

    def decided(
        self,
        decision: str,
        score: float,
        *,
        received: float,
        event_time: float,
        now: float,
        exploration: bool = False,
    ) -> None:
        """One transaction decided at ``now`` (all times in epoch seconds); ``exploration``:
        allowed, and put up for review as the exploration sample."""
        self._decided[decision].inc()
        alerted = self._alerted.get(decision)
        if alerted is not None:
            alerted.inc()
        if exploration:
            self.exploration_alerts.inc()
        self.score.observe(score)
        self.latency.observe(max(0.0, now - received))
        self.event_time_lag.observe(max(0.0, now - event_time))

    def policy(self, outcome: PolicyOutcome) -> None:
        """What the rules, lists and safety valves did to one decision."""
        for rule, mode in outcome.rule_hits:
            self.rule_hits.labels(rule, mode).inc()
        for rule in outcome.rule_errors:
            self.rule_errors.labels(rule).inc()
        if outcome.list_hit is not None:
            self._list_hits[outcome.list_hit].inc()
        if outcome.capped:
            self.blocks_capped.inc()
        if outcome.degraded:
            self.degraded.inc()

    def noticed(self, event: DetectorEvent, *, now: float) -> None:
        """An attack or a drift noticed at ``now`` (wall clock)."""
        self._noticed[event.kind].inc()
        if event.kind in ("terminal_burst", "card_testing"):
            for terminal in event.terminals:
                self._bursts[terminal] = now

    def _terminals_in_burst(self) -> float:
        since = time.time() - self.burst_seconds
        for terminal in [t for t, at in self._bursts.items() if at < since]:
            del self._bursts[terminal]
        return float(len(self._bursts))

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
