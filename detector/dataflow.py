"""The Bytewax dataflow: Kafka and keyed state around the scoring core.

This is the only module that imports Bytewax. The flow, step by step:

    kafka_in (transactions, labels, control)
    -> parse_and_validate        Transaction | Label | Control | DeadLetter
    -> key_by_card -> card_state         per-card features, duplicates, label routing
    -> key_by_terminal -> terminal_state per-terminal features, frauds, pending features
    -> (+ control) key_by_model -> model score, decide, explain; learn; apply controls
    -> decisions, alerts, model-status, dead letters (each a Kafka topic)

From parsing on, every item travels as ``(item, received)``: ``received`` is the time its
Kafka record was written (the record's timestamp) or, without one, parsed, so that the
output step can measure the processing latency. The steps update the metrics of
``detector.telemetry``; ``run`` serves them.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import bytewax.operators as op
import structlog
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulLogic
from bytewax.outputs import Sink
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from detector.contracts import Control, DeadLetter, Label, ModelStatus, RejectReason, Transaction
from detector.scoring import (
    CardOut,
    CardState,
    ControlApplied,
    CoreConfig,
    LabelToLearn,
    Learned,
    ModelIn,
    ModelOut,
    ModelState,
    Rejected,
    RoutedLabel,
    Scored,
    TerminalIn,
    TerminalOut,
    TerminalState,
    card_step,
    ensure_models,
    model_statuses,
    model_step,
    new_model_state,
    terminal_key,
    terminal_step,
)
from detector.settings import Settings
from detector.telemetry import METRICS, DetectorMetrics, MetricsServerError, metrics_port, serve
from detector.validation import parse_control, parse_event

log = structlog.get_logger(__name__)

Event = Transaction | Label
Message = KafkaSinkMessage[bytes | None, bytes | None]
MODEL_KEY = "model"
T = TypeVar("T")
V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")
# An item with the time (epoch seconds) its Kafka record was written, or parsed.
Stamped = tuple[T, float]
Parsed = Stamped[Event | Control | DeadLetter]
# Kafka's "no timestamp" type (confluent_kafka.TIMESTAMP_NOT_AVAILABLE)
_NO_TIMESTAMP = 0


@dataclass
class Sinks:
    """Where the flow writes; tests swap Kafka for ``TestingSink``s."""

    decisions: Sink[Message]
    alerts: Sink[Message]
    dead_letters: Sink[Message]
    model_status: Sink[Message]


def _received(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> float:
    """When the record was written to Kafka, or now if it says nothing."""
    stamp = msg.timestamp
    if stamp is not None and stamp[0] != _NO_TIMESTAMP and stamp[1] > 0:
        return stamp[1] / 1000.0
    return time.time()


class _Parser:
    """Turns a Kafka record into an event, a control message or a dead letter."""

    def __init__(self, settings: Settings) -> None:
        self.labels_topic = settings.topic_labels
        self.control_topic = settings.topic_control
        self.max_bytes = settings.max_message_bytes
        self.max_skew = timedelta(seconds=settings.max_clock_skew_seconds)

    def __call__(self, msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Parsed:
        parsed: Event | Control | tuple[RejectReason, str]
        if msg.topic == self.control_topic:
            parsed = parse_control(msg.value, max_bytes=self.max_bytes)
        else:
            kind = Label if msg.topic == self.labels_topic else Transaction
            parsed = parse_event(
                msg.value, kind, max_bytes=self.max_bytes, max_clock_skew=self.max_skew
            )
        if isinstance(parsed, tuple):
            reason, error = parsed
            dead = DeadLetter.of(
                reason,
                error,
                msg.value,
                key=msg.key,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
            )
            return dead, 0.0
        return parsed, _received(msg)


@operator
def _keyed_state(
    step_id: str,
    up: KeyedStream[V],
    builder: Callable[[S | None], StatefulLogic[V, W, S]],
) -> KeyedStream[W]:
    """``op.stateful`` nested as ``op.stateful_flat_map`` nests it.

    The inner step has the same id as a ``stateful_flat_map``'s, so recovery snapshots
    taken by either load in the other.
    """
    return op.stateful("stateful", up, builder)


class _CardLogic(StatefulLogic[Stamped[Event], Stamped[CardOut], CardState]):
    """``card_step`` for one card; counts the cards held by this worker."""

    def __init__(
        self, config: CoreConfig, metrics: DetectorMetrics, state: CardState | None
    ) -> None:
        self.config = config
        self.state = state
        self.sizes = metrics.state.worker()
        if state is not None:
            self.sizes.cards += 1

    def on_item(self, value: Stamped[Event]) -> tuple[list[Stamped[CardOut]], bool]:
        event, received = value
        if self.state is None:
            self.sizes.cards += 1
        self.state, out = card_step(self.state, event, self.config)
        return [(o, received) for o in out], StatefulLogic.RETAIN

    def snapshot(self) -> CardState:
        assert self.state is not None
        return copy.deepcopy(self.state)


class _TerminalLogic(StatefulLogic[Stamped[TerminalIn], Stamped[TerminalOut], TerminalState]):
    """``terminal_step`` for one terminal; counts terminals and kept features, and
    measures the delay of the labels it passes on to learn."""

    def __init__(
        self, config: CoreConfig, metrics: DetectorMetrics, state: TerminalState | None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.state = state
        self.sizes = metrics.state.worker()
        if state is not None:
            self.sizes.terminals += 1
            self.sizes.pending += len(state.pending)

    def on_item(self, value: Stamped[TerminalIn]) -> tuple[list[Stamped[TerminalOut]], bool]:
        item, received = value
        if self.state is None:
            self.sizes.terminals += 1
            before = 0
        else:
            before = len(self.state.pending)
        self.state, out = terminal_step(self.state, item, self.config)
        self.sizes.pending += len(self.state.pending) - before
        if isinstance(item, RoutedLabel) and out and isinstance(out[0], LabelToLearn):
            label = item.label
            delay = label.labeled_at.timestamp() - item.transaction_time
            self.metrics.label_delay_observed(label.source, delay)
        return [(o, received) for o in out], StatefulLogic.RETAIN

    def snapshot(self) -> TerminalState:
        assert self.state is not None
        return copy.deepcopy(self.state)


ModelItem = Stamped[ModelOut | ModelStatus]


class _ModelLogic(StatefulLogic[Stamped[ModelIn], ModelItem, ModelState]):
    """The model step, plus the models' status every ``interval`` seconds, at the end,
    and at once after a control message is applied (so that the change shows)."""

    def __init__(self, config: CoreConfig, interval: float, state: ModelState | None) -> None:
        self.config = config
        self.interval = timedelta(seconds=interval)
        self.state = ensure_models(state, config) if state is not None else new_model_state(config)
        self.next_status = datetime.now(UTC)

    def on_item(self, value: Stamped[ModelIn]) -> tuple[list[ModelItem], bool]:
        item, received = value
        self.state, out = model_step(self.state, item, self.config)
        stamped: list[ModelItem] = [(o, received) for o in out]
        if isinstance(item, Control) and any(isinstance(o, ControlApplied) for o in out):
            return [*stamped, *self._status()[0]], StatefulLogic.RETAIN
        return stamped, StatefulLogic.RETAIN

    def _status(self) -> tuple[list[ModelItem], bool]:
        self.next_status = datetime.now(UTC) + self.interval
        now = time.time()
        return [(s, now) for s in model_statuses(self.state)], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def on_eof(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def notify_at(self) -> datetime:
        return self.next_status

    def snapshot(self) -> ModelState:
        return self.state


def _kafka_error(err: Any) -> DeadLetter:
    msg = err.msg
    return DeadLetter.of(
        RejectReason.KAFKA_ERROR,
        str(err.err),
        msg.value,
        key=msg.key,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
    )


def _message(key: str, value: str) -> Message:
    return KafkaSinkMessage(key.encode(), value.encode())


class _Router:
    """Which topic(s) an outcome goes to, as (sink name, message); counts the outcomes."""

    def __init__(self, metrics: DetectorMetrics) -> None:
        self.metrics = metrics

    def __call__(self, value: ModelItem) -> list[tuple[str, Message]]:
        item, received = value
        if isinstance(item, Scored):
            tx = item.transaction
            score = item.score
            self.metrics.decided(
                item.decision,
                score,
                received=received,
                event_time=tx.epoch_seconds,
                now=time.time(),
            )
            key = tx.card_id
            out = [("decisions", _message(key, item.to_decision().model_dump_json()))]
            alert = item.to_alert()
            if alert is not None:
                out.append(("alerts", _message(key, alert.model_dump_json())))
                log.info(
                    "alert",
                    transaction_id=tx.transaction_id,
                    decision=item.decision,
                    score=round(score, 3),
                    reason=item.reasons[0] if item.reasons else None,
                )
            return out
        if isinstance(item, ModelStatus):
            self.metrics.model_status(item)
            return [("model_status", _message(item.model_name, item.model_dump_json()))]
        if isinstance(item, Learned):
            self.metrics.learned(item.source)
            if item.source != "presumed":
                log.info("label learned", transaction_id=item.transaction_id, source=item.source)
        if isinstance(item, ControlApplied):
            control = item.control
            log.info(
                "control applied",
                control_id=control.control_id,
                action=control.action,
                model_name=control.model_name,
                thresholds=control.thresholds.model_dump() if control.thresholds else None,
                requested_by=control.requested_by,
            )
        return []


def build_flow(
    settings: Settings,
    *,
    source: Source[KafkaSourceMessage[bytes | None, bytes | None]] | None = None,
    sinks: Sinks | None = None,
    tail: bool = True,
    metrics: DetectorMetrics = METRICS,
) -> Dataflow:
    """The fraudstream dataflow; ``source`` and ``sinks`` default to Kafka.

    With ``tail=False`` the Kafka input ends at the end of each partition (tests, batch
    catch-up) instead of waiting for new records. The flow updates ``metrics`` (by
    default the process's, which ``run`` serves).
    """
    config = CoreConfig.from_settings(settings)
    flow = Dataflow("fraudstream")
    errors: list[Stream[DeadLetter]] = []
    if source is None:
        kafka_in = kop.input(
            "kafka_in",
            flow,
            brokers=settings.brokers,
            topics=[settings.topic_transactions, settings.topic_labels, settings.topic_control],
            tail=tail,
            batch_size=settings.kafka_batch_size,
            add_config=dict(settings.kafka_extra_config),
        )
        records = kafka_in.oks
        errors.append(op.map("kafka_error_to_dead_letter", kafka_in.errs, _kafka_error))
    else:
        records = op.input("records_in", flow, source)
    # KafkaSourceMessage

    parsed = op.map("parse_and_validate", records, _Parser(settings))
    # (Transaction | Label | Control | DeadLetter, received)
    events: Stream[Stamped[Event]] = op.filter_map("valid_events", parsed, _event_or_none)
    controls: Stream[Stamped[Control]] = op.filter_map("valid_controls", parsed, _control_or_none)
    errors.append(op.filter_map("invalid_records", parsed, _dead_letter_or_none))

    by_card = op.key_on("key_by_card", events, _card_key)
    card_out = op.key_rm(
        "card_out",
        _keyed_state("card_state", by_card, partial(_CardLogic, config, metrics)),
    )
    # (CardFeatured | RoutedLabel | Rejected, received)
    to_dead_letter = partial(_rejected_to_dead_letter, settings)
    errors.append(op.filter_map("card_rejections", card_out, to_dead_letter))
    card_ok: Stream[Stamped[TerminalIn]] = op.filter_map("card_accepted", card_out, _accepted)

    by_terminal = op.key_on("key_by_terminal", card_ok, _terminal_key)
    terminal_out = op.key_rm(
        "terminal_out",
        _keyed_state("terminal_state", by_terminal, partial(_TerminalLogic, config, metrics)),
    )
    # (Featured | LabelToLearn | Rejected, received)
    errors.append(op.filter_map("terminal_rejections", terminal_out, to_dead_letter))
    terminal_ok: Stream[Stamped[ModelIn]] = op.filter_map(
        "terminal_accepted", terminal_out, _accepted
    )

    # Control messages skip the card and terminal steps: they are for the models alone.
    model_in: Stream[Stamped[ModelIn]] = op.merge("model_in", terminal_ok, controls)
    by_model = op.key_on("key_by_model", model_in, lambda _: MODEL_KEY)
    interval = settings.status_interval_seconds
    model_out = op.key_rm(
        "model_out",
        op.stateful("model", by_model, lambda state: _ModelLogic(config, interval, state)),
    )
    # (Scored | Learned | ControlApplied | Rejected | ModelStatus, received)
    errors.append(op.filter_map("model_rejections", model_out, to_dead_letter))

    dead_letters = op.merge("dead_letters", *errors)
    op.inspect("log_dead_letter", dead_letters, partial(_log_dead_letter, metrics))

    routed = op.flat_map("route_outputs", model_out, _Router(metrics))
    # (sink name, KafkaSinkMessage)
    sinks = sinks or kafka_sinks(settings)
    for name in ("decisions", "alerts", "model_status"):
        picked = op.filter_map(f"pick_{name}", routed, partial(_pick, name))
        op.output(f"{name}_out", picked, getattr(sinks, name))
    op.output(
        "dead_letters_out",
        op.map("dead_letter_message", dead_letters, _dead_letter_message),
        sinks.dead_letters,
    )
    return flow


def _event_or_none(item: Parsed) -> Stamped[Event] | None:
    return item if isinstance(item[0], Transaction | Label) else None  # type: ignore[return-value]


def _control_or_none(item: Parsed) -> Stamped[Control] | None:
    return item if isinstance(item[0], Control) else None  # type: ignore[return-value]


def _dead_letter_or_none(item: Parsed) -> DeadLetter | None:
    return item[0] if isinstance(item[0], DeadLetter) else None


def _card_key(item: Stamped[Event]) -> str:
    return item[0].card_id


def _terminal_key(item: Stamped[TerminalIn]) -> str:
    return terminal_key(item[0])


def _accepted(item: Stamped[Any]) -> Stamped[Any] | None:
    """The items a step passed on (its rejections go to the dead letters)."""
    return None if isinstance(item[0], Rejected) else item


def _rejected_to_dead_letter(settings: Settings, stamped: Stamped[object]) -> DeadLetter | None:
    item = stamped[0]
    if not isinstance(item, Rejected):
        return None
    # Labels are the only events rejected for naming an unknown transaction.
    if item.control:
        topic = settings.topic_control
    elif item.reason is RejectReason.UNKNOWN_TRANSACTION:
        topic = settings.topic_labels
    else:
        topic = settings.topic_transactions
    return DeadLetter.of(item.reason, item.error, item.payload, topic=topic)


def _pick(name: str, pair: tuple[str, Message]) -> Message | None:
    return pair[1] if pair[0] == name else None


def _dead_letter_message(item: DeadLetter) -> Message:
    return KafkaSinkMessage(b"", item.model_dump_json().encode())


def _log_dead_letter(metrics: DetectorMetrics, step_id: str, item: DeadLetter) -> None:
    metrics.dead_letter(item.reason)
    log.warning(
        "dead letter",
        reason=item.reason.value,
        error=item.error[:200],
        topic=item.source_topic,
        partition=item.partition,
        offset=item.offset,
    )


def kafka_sinks(settings: Settings) -> Sinks:
    from bytewax.connectors.kafka import KafkaSink

    def sink(topic: str) -> Sink[Message]:
        return KafkaSink(settings.brokers, topic, add_config=dict(settings.kafka_extra_config))

    return Sinks(
        decisions=sink(settings.topic_decisions),
        alerts=sink(settings.topic_alerts),
        dead_letters=sink(settings.topic_dead_letters),
        model_status=sink(settings.topic_model_status),
    )


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Recovery is on by default: create the snapshot store on first use.

    A cluster of N processes needs N partitions, each held exactly once by the cluster
    as a whole: process i creates partition i of N in its recovery folder if it is not
    there. That works both with a folder per process (pods with volumes of their own)
    and with one folder shared by the processes of a host.
    """
    if not settings.recovery:
        return None
    path = settings.recovery_path
    path.mkdir(parents=True, exist_ok=True)
    processes = max(len(settings.cluster), 1)
    if processes == 1:
        if not any(path.iterdir()):
            init_db_dir(path, 1)
            log.info("recovery store created", path=str(path))
    else:
        index = settings.process_id or 0
        own = path / f"part-{index}.sqlite3"
        if not own.exists():
            with tempfile.TemporaryDirectory(dir=path) as scratch:
                init_db_dir(Path(scratch), processes)
                os.replace(Path(scratch) / own.name, own)
            log.info("recovery partition created", path=str(own), of=processes)
    return RecoveryConfig(str(path))


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Bytewax has no graceful stop: end the process at once. Outputs are flushed batch
    # by batch and offsets live in the last snapshot, so a restart resumes from there
    # and re-publishes at most the unfinished epoch, with the same ids.
    log.info("detector stopping", signal=signal.Signals(signum).name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_metrics(settings: Settings) -> str | None:
    """Serve the detector's /metrics; its URL (see ``telemetry.metrics_port``).

    None when ``metrics_port`` is 0. A port in use or an unusable host ends the process
    with a plain message, before the dataflow starts.
    """
    if not settings.metrics_port:
        return None
    try:
        port = metrics_port(settings.metrics_port, settings.process_id, settings.cluster)
        server = serve(settings.metrics_host, port)
    except MetricsServerError as error:
        log.error("metrics endpoint unavailable", error=str(error))
        raise SystemExit(f"fraudstream detect: {error}") from None
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}/metrics"


def run(settings: Settings) -> None:
    """Run the detector until stopped (blocks); SIGINT and SIGTERM stop it."""
    flow = build_flow(settings)
    metrics_url = start_metrics(settings)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)
    addresses = settings.cluster or None
    log.info(
        "detector starting",
        brokers=settings.brokers,
        recovery=str(settings.recovery_path) if settings.recovery else None,
        workers=settings.workers,
        metrics=metrics_url,
    )
    cli_main(
        flow,
        workers_per_process=settings.workers,
        process_id=settings.process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_seconds),
        recovery_config=recovery_config(settings),
    )
