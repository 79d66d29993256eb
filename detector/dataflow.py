"""The Bytewax dataflow: Kafka and keyed state around the scoring core.

This module and ``detector.flow`` are the only code that imports Bytewax. The flow, step
by step:

    kafka_in (transactions, labels, control, score-requests)
    -> parse_and_validate        Transaction | Label | Control | DeadLetter
                                 (a score request: its transaction, carrying the request id)
    -> key_by_card -> card_state         per-card features, duplicates, label routing
    -> key_by_terminal -> terminal_state per-terminal features, frauds, pending features
    -> (+ control) key_by_model -> model score, decide, explain; learn; apply controls
    -> decisions, alerts, model-status, dead letters (each a Kafka topic), and the
       replies to score requests: the decision, or ``duplicate`` from the card step
    -> detector-events: bursts the terminal step noticed, shifts the model step noticed

Items travel with their stamps (``detector.flow.stamped``); the keyed steps are
``detector.flow.steps``; Kafka at both ends is ``detector.flow.kafka``. The steps update
the metrics of ``detector.metrics``; ``run`` serves them.

No item can stop the flow: every step runs each item under a guard, and an exception
dead-letters that item (reason ``internal_error``) while the flow goes on. Every output
is delivered or the epoch fails: the sinks wait for the broker's acknowledgement
(idempotent producers, ``acks=all``) and retry what it has not taken. After a crash,
the model step first reads back the decisions published since its last snapshot, and a
transaction decided again gets the very same decision (``detector.published``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
import structlog
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.run import cli_main

from detector.contracts import Control, DeadLetter, Label, Transaction
from detector.flow.kafka import Parser, Sinks, kafka_error_letter, kafka_sinks
from detector.flow.outputs import (
    Router,
    dead_letter_message,
    duplicate_reply,
    log_dead_letter,
    pick,
    rejected_to_dead_letter,
)
from detector.flow.recovery import ReadBack, recovery_config, waiting_path
from detector.flow.shards import keyed_by_shard, shard_keys
from detector.flow.stamped import Event, ModelItem, Outcome, Parsed, ShardIn, Stamped
from detector.flow.steps import CardLogic, ModelLogic, StatusLogic, TerminalLogic, Watermark
from detector.items import ModelIn, Noticed, Rejected, TerminalIn
from detector.kafka_config import consumer_config
from detector.metrics import METRICS, DetectorMetrics
from detector.metrics.endpoint import MetricsServerError, metrics_port, serve
from detector.published import Published
from detector.settings import Settings
from detector.status import ShardSummary
from detector.terminals import terminal_key
from detector.waiting import StoreFormatError, waiting_store

log = structlog.get_logger(__name__)


def build_flow(
    settings: Settings,
    *,
    source: Source[KafkaSourceMessage[bytes | None, bytes | None]] | None = None,
    sinks: Sinks | None = None,
    tail: bool = True,
    metrics: DetectorMetrics = METRICS,
    read_back: Callable[[float | None], Published] | None = None,
    waiting: Path | None = None,
) -> Dataflow:
    """The fraudstream dataflow; ``source`` and ``sinks`` default to Kafka.

    With ``tail=False`` the Kafka input ends at the end of each partition (tests, batch
    catch-up) instead of waiting for new records. The flow updates ``metrics`` (by
    default the process's, which ``run`` serves). ``read_back`` gives a resumed model
    step the decisions published since its snapshot (``run`` reads them from Kafka).
    ``waiting`` is the file of this process's features waiting for labels (see
    ``detector.waiting``); without it they stay in memory.
    """
    config = settings.scoring.placed(shards=settings.detector.shards, waiting_store=waiting)
    metrics.burst_seconds = 60.0 * max(config.burst_window_minutes, config.burst_review_minutes)
    if waiting is not None:
        store = waiting_store(
            waiting, config.waiting_cache_mb, shared=settings.detector.workers > 1
        )
        metrics.state.stored_pending = lambda: store.rows
    flow = Dataflow("fraudstream")
    watermark = Watermark()  # the event time each worker has reached: for idle state
    errors: list[Stream[DeadLetter]] = []
    if source is None:
        kafka_in = kop.input(
            "kafka_in",
            flow,
            brokers=settings.kafka.brokers,
            topics=[
                settings.kafka.topic_transactions,
                settings.kafka.topic_labels,
                settings.kafka.topic_control,
                settings.kafka.topic_score_requests,
            ],
            tail=tail,
            batch_size=settings.kafka.kafka_batch_size,
            add_config=consumer_config(settings),
        )
        records = kafka_in.oks
        errors.append(op.map("kafka_error_to_dead_letter", kafka_in.errs, kafka_error_letter))
    else:
        records = op.input("records_in", flow, source)
    # KafkaSourceMessage

    parsed = op.map("parse_and_validate", records, Parser(settings))
    # (Transaction | Label | Control | DeadLetter, received)
    events: Stream[Stamped[Event]] = op.filter_map("valid_events", parsed, _event_or_none)
    controls: Stream[Stamped[Control]] = op.filter_map("valid_controls", parsed, _control_or_none)
    errors.append(op.filter_map("invalid_records", parsed, _dead_letter_or_none))

    by_card = op.key_on("key_by_card", events, _card_key)
    card_out = op.key_rm(
        "card_out",
        op.stateful("card_state", by_card, partial(CardLogic, config, metrics, watermark)),
    )
    # (CardFeatured | RoutedLabel | Rejected, received)
    to_dead_letter = partial(rejected_to_dead_letter, settings)
    errors.append(op.filter_map("card_rejections", card_out, to_dead_letter))
    duplicates = op.filter_map(
        "duplicate_requests", card_out, partial(duplicate_reply, settings)
    )  # KafkaSinkMessage: a score request's transaction was decided before
    card_ok: Stream[Stamped[TerminalIn]] = op.filter_map("card_accepted", card_out, _accepted)

    by_terminal = op.key_on("key_by_terminal", card_ok, _terminal_key)
    terminal_out = op.key_rm(
        "terminal_out",
        op.stateful_batch(
            "terminal_state", by_terminal, partial(TerminalLogic, config, metrics, watermark)
        ),
    )
    # (Featured | LabelToLearn | Rejected | Noticed, received)
    errors.append(op.filter_map("terminal_rejections", terminal_out, to_dead_letter))
    bursts: Stream[Outcome] = op.filter_map("terminal_events", terminal_out, _noticed_or_none)
    terminal_ok: Stream[Stamped[ModelIn]] = op.filter_map(
        "terminal_accepted", terminal_out, _accepted
    )

    # Control messages skip the card and terminal steps: they are for the models alone.
    model_in: Stream[Stamped[ModelIn]] = op.merge("model_in", terminal_ok, controls)
    by_shard: KeyedStream[ShardIn] = op.flat_map(
        "key_by_shard", model_in, partial(keyed_by_shard, shard_keys(config.shards, settings))
    )
    model_logic = partial(
        ModelLogic,
        config,
        settings.detector.status_interval_seconds,
        read_back or _nothing_published,
    )
    shards_out = op.key_rm("model_out", op.stateful_batch("model", by_shard, model_logic))
    # (Scored | Learned | ControlApplied | Rejected | Noticed | ShardSummary, received, seq, None)
    summaries = op.filter_map("shard_summaries", shards_out, _summary_or_none)
    statuses = op.key_rm(
        "status_out",
        op.stateful_batch("status", op.key_on("key_status", summaries, _status_key), StatusLogic),
    )
    model_out: Stream[Outcome] = op.merge(
        "model_and_status",
        op.filter("model_outcomes", shards_out, _not_summary),
        statuses,
        bursts,
    )
    # (Scored | Learned | ControlApplied | Rejected | Noticed | ModelStatus, received)
    errors.append(op.filter_map("model_rejections", model_out, to_dead_letter))

    dead_letters = op.merge("dead_letters", *errors)
    op.inspect("log_dead_letter", dead_letters, partial(log_dead_letter, metrics))

    routed = op.flat_map("route_outputs", model_out, Router(metrics))
    # (sink name, KafkaSinkMessage)
    sinks = sinks or kafka_sinks(settings)
    for name in ("decisions", "alerts", "model_status"):
        picked = op.filter_map(f"pick_{name}", routed, partial(pick, name))
        op.output(f"{name}_out", picked, getattr(sinks, name))
    replies = op.filter_map("pick_score_replies", routed, partial(pick, "score_replies"))
    if sinks.score_replies is not None:
        op.output(
            "score_replies_out",
            op.merge("all_score_replies", replies, duplicates),
            sinks.score_replies,
        )
    noticed = op.filter_map("pick_detector_events", routed, partial(pick, "detector_events"))
    if sinks.detector_events is not None:
        op.output("detector_events_out", noticed, sinks.detector_events)
    unroutable = op.filter_map("pick_unroutable", routed, partial(pick, "dead_letters"))
    dead_messages = op.map("dead_letter_message", dead_letters, dead_letter_message)
    op.output(
        "dead_letters_out",
        op.merge("all_dead_letters", dead_messages, unroutable),
        sinks.dead_letters,
    )
    return flow


def _summary_or_none(value: ModelItem) -> ShardSummary | None:
    return value[0] if isinstance(value[0], ShardSummary) else None


def _not_summary(value: ModelItem) -> bool:
    return not isinstance(value[0], ShardSummary)


def _status_key(_: ShardSummary) -> str:
    return "status"


def _nothing_published(_: float | None) -> Published:
    return {}


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
    """The items a step passed on (its rejections go to the dead letters, what it
    noticed to the detector's events)."""
    return None if isinstance(item[0], Rejected | Noticed) else item


def _noticed_or_none(item: Stamped[Any]) -> Outcome | None:
    return item if isinstance(item[0], Noticed) else None


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Bytewax has no graceful stop: end the process at once. Outputs are flushed batch
    # by batch and offsets live in the last snapshot, so a restart resumes from there
    # and re-publishes at most the unfinished epoch, with the same ids.
    log.info("detector stopping", signal=signal.Signals(signum).name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_metrics(settings: Settings) -> str | None:
    """Serve the detector's /metrics; its URL (see ``detector.metrics.endpoint.metrics_port``).

    None when ``metrics_port`` is 0. A port in use or an unusable host ends the process
    with a plain message, before the dataflow starts.
    """
    if not settings.detector.metrics_port:
        return None
    try:
        port = metrics_port(
            settings.detector.metrics_port, settings.detector.process_id, settings.detector.cluster
        )
        server = serve(settings.detector.metrics_host, port)
    except MetricsServerError as error:
        log.error("metrics endpoint unavailable", error=str(error))
        raise SystemExit(f"fraudstream detect: {error}") from None
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}/metrics"


def run(settings: Settings) -> None:
    """Run the detector until stopped (blocks); SIGINT and SIGTERM stop it."""
    recovery = recovery_config(settings)  # before the waiting features land in its folder
    try:
        flow = build_flow(
            settings,
            read_back=ReadBack(settings) if settings.detector.recovery else None,
            waiting=waiting_path(settings),
        )
    except StoreFormatError as error:
        raise SystemExit(f"fraudstream detect: {error}") from None
    metrics_url = start_metrics(settings)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)
    addresses = settings.detector.cluster or None
    log.info(
        "detector starting",
        brokers=settings.kafka.brokers,
        recovery=str(settings.recovery_path) if settings.detector.recovery else None,
        workers=settings.detector.workers,
        metrics=metrics_url,
    )
    cli_main(
        flow,
        workers_per_process=settings.detector.workers,
        process_id=settings.detector.process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.detector.snapshot_interval_seconds),
        recovery_config=recovery,
    )
