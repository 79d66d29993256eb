"""The Bytewax dataflow: Kafka and keyed state around the scoring core.

This is the only module that imports Bytewax. The flow, step by step:

    kafka_in (transactions, labels, control)
    -> parse_and_validate        Transaction | Label | Control | DeadLetter
    -> key_by_card -> card_state         per-card features, duplicates, label routing
    -> key_by_terminal -> terminal_state per-terminal features, frauds, pending features
    -> (+ control) key_by_model -> model score, decide, explain; learn; apply controls
    -> decisions, alerts, model-status, dead letters (each a Kafka topic)

From parsing on, every item travels as ``(item, received, seq, origin)``: ``received`` is
the time its Kafka record was written (the record's timestamp) or, without one, parsed,
so that the output step can measure the processing latency; ``seq`` numbers the records
in the order this worker read them, so that the model step can restore that order (see
``in_arrival_order``); ``origin`` is the record itself until the step that uses it (for
dead letters), else None. The steps update the metrics
of ``detector.metrics``; ``run`` serves them.

No item can stop the flow: every step runs each item under a guard, and an exception
dead-letters that item (reason ``internal_error``) while the flow goes on. Every output
is delivered or the epoch fails: the sinks wait for the broker's acknowledgement
(idempotent producers, ``acks=all``) and retry what it has not taken. After a crash,
the model step first reads back the decisions published since its last snapshot, and a
transaction decided again gets the very same decision (``detector.published``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pickle
import signal
import sqlite3
import sys
import tempfile
import threading
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
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from confluent_kafka import KafkaError, Producer

from detector import __version__
from detector.cards import CardState, card_idle, card_step, expire_parked, parked_until
from detector.contracts import Control, DeadLetter, Label, ModelStatus, RejectReason, Transaction
from detector.items import (
    CardOut,
    ControlApplied,
    LabelToLearn,
    Learned,
    ModelIn,
    ModelOut,
    Origin,
    Rejected,
    RoutedLabel,
    Scored,
    TerminalIn,
    TerminalOut,
)
from detector.kafka_config import consumer_config, producer_config
from detector.metrics import METRICS, DetectorMetrics, MetricsServerError, metrics_port, serve
from detector.published import Published, read_published
from detector.scoring import (
    ModelState,
    ensure_models,
    model_step,
    new_model_state,
    shard_of,
    to_shards,
)
from detector.settings import CoreConfig, Settings
from detector.status import ShardSummary, merge_statuses, summarize
from detector.terminals import TerminalState, terminal_idle, terminal_key, terminal_step
from detector.validation import parse_control, parse_event
from detector.waiting import PURGE_MARGIN_SECONDS, StoredPending, waiting_store
from models import PendingFeatures

log = structlog.get_logger(__name__)

Event = Transaction | Label
Message = KafkaSinkMessage[bytes | None, bytes | None]
T = TypeVar("T")
X = TypeVar("X")
# An item with the time (epoch seconds) its Kafka record was written, or parsed, its
# record's place in this worker's input, and the record itself while a step may still
# need it for a dead letter.
Stamped = tuple[T, float, int, Origin | None]
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
        self.seq = itertools.count()

    def __call__(self, msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Parsed:
        try:
            return self._parse(msg)
        except Exception as error:  # no record may stop the flow
            dead = DeadLetter.of(
                RejectReason.INTERNAL_ERROR,
                _internal("parse_and_validate", error),
                msg.value,
                key=msg.key,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
            )
            return dead, 0.0, 0, None

    def _parse(self, msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Parsed:
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
            return dead, 0.0, 0, None
        origin = Origin(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
        return parsed, _received(msg), next(self.seq), origin


def _internal(step: str, error: BaseException) -> str:
    """The dead letter's error for an exception a step raised on one item."""
    log.exception("step failed on one item", step=step, error_type=type(error).__name__)
    return f"{step}: {type(error).__name__}: {error}"


def _internal_rejection(
    step: str, error: BaseException, item: object, origin: Origin | None
) -> Rejected:
    """An item a step failed on, as a rejection that keeps what is known of its record."""
    return Rejected(
        RejectReason.INTERNAL_ERROR,
        _internal(step, error),
        _payload(item),
        control=isinstance(item, Control),
        origin=origin if origin is not None else getattr(item, "origin", None),
    )


def _payload(item: object) -> bytes:
    """The event inside a flow item, serialised (for a dead letter without a record)."""
    for name in ("transaction", "label"):
        inner = getattr(item, name, None)
        if isinstance(inner, Transaction | Label):
            return inner.model_dump_json().encode()
    if isinstance(item, Transaction | Label | Control):
        return item.model_dump_json().encode()
    return repr(item).encode()[:2000]


# Snapshots are pickled at once, which copies the state as it is at the end of the epoch
# (Bytewax pickles what ``snapshot`` returns later, while the state goes on changing),
# and carry a format number: a store written by another format is refused, not misread.
SNAPSHOT_FORMAT = 4


class RecoveryStoreError(RuntimeError):
    """The recovery store holds snapshots this version cannot read."""


def _freeze(state: object) -> tuple[int, str, bytes]:
    return SNAPSHOT_FORMAT, __version__, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _thaw(snapshot: object, kind: type[T]) -> T:
    if (
        isinstance(snapshot, tuple)
        and len(snapshot) == 3
        and snapshot[0] == SNAPSHOT_FORMAT
        and isinstance(snapshot[2], bytes)
    ):
        state = pickle.loads(snapshot[2])
        if isinstance(state, kind):
            return state
    written_by = (
        f"fraudstream {snapshot[1]} (format {snapshot[0]})"
        if isinstance(snapshot, tuple) and len(snapshot) == 3
        else "an older fraudstream"
    )
    raise RecoveryStoreError(
        f"the recovery store was written by {written_by}; this is fraudstream {__version__} "
        f"(format {SNAPSHOT_FORMAT}). Start from scratch by deleting FRAUDSTREAM_RECOVERY_DIR "
        f"(and the output topics' consumers' expectations), or run the version that wrote it."
    )


Snapshot = tuple[int, str, bytes]


class _CardLogic(StatefulLogic[Stamped[Event], Stamped[CardOut], Snapshot]):
    """``card_step`` for one card; counts the cards and parked labels of this worker.

    A label that waits for its transaction wakes the card when it has waited
    ``label_park_seconds``; the card also wakes every ``IDLE_CHECK_SECONDS`` and leaves
    the state (and the recovery store) once nothing of it can matter any more, as of the
    latest event time this worker has seen (``card_idle``).
    """

    def __init__(
        self,
        config: CoreConfig,
        metrics: DetectorMetrics,
        watermark: Watermark,
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.watermark = watermark
        self.state = _thaw(snapshot, CardState) if snapshot is not None else None
        self.sizes = metrics.state.worker()
        if self.state is not None:
            self.sizes.cards += 1
            self.sizes.parked += len(self.state.parked)

    def on_item(self, value: Stamped[Event]) -> tuple[list[Stamped[CardOut]], bool]:
        event, received, seq, origin = value
        if self.state is None:
            self.sizes.cards += 1
            parked = 0
        else:
            parked = len(self.state.parked)
        if isinstance(event, Transaction):
            self.watermark.advance(event.epoch_seconds)
        try:
            self.state, out = card_step(
                self.state, event, self.config, origin=origin, received=received
            )
        except Exception as error:
            out = [_internal_rejection("card_state", error, event, origin)]
        if self.state is not None:
            self.sizes.parked += len(self.state.parked) - parked
        return [(o, received, seq, None) for o in out], StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.state is None:
            return None
        check = time.time() + IDLE_CHECK_SECONDS
        until = parked_until(self.state, self.config)
        return datetime.fromtimestamp(min(check, until or check), UTC)

    def on_notify(self) -> tuple[list[Stamped[CardOut]], bool]:
        if self.state is None:
            return [], StatefulLogic.RETAIN
        before = len(self.state.parked)
        expired = expire_parked(self.state, time.time(), self.config)
        self.sizes.parked -= before - len(self.state.parked)
        out: list[Stamped[CardOut]] = [(r, time.time(), 0, None) for r in expired]
        if self.state.empty or card_idle(self.state, self.watermark.event_time, self.config):
            self.sizes.cards -= 1
            return out, StatefulLogic.DISCARD
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> Snapshot:
        assert self.state is not None
        return _freeze(self.state)


class _TerminalLogic(StatefulBatchLogic[Stamped[TerminalIn], Stamped[TerminalOut], Snapshot]):
    """``terminal_step`` for one terminal, in the order the records were read (the card
    step hands on its batch grouped by card); counts terminals and kept features, and
    measures the delay of the labels it passes on to learn.

    Every ``IDLE_CHECK_SECONDS`` it also presumes legitimate what has waited long enough
    as of the latest event time this worker has seen, so that a terminal gone quiet does
    too, and leaves the state once nothing of it can matter (``terminal_idle``).
    """

    def __init__(
        self,
        config: CoreConfig,
        metrics: DetectorMetrics,
        watermark: Watermark,
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.watermark = watermark
        self.state = _thaw(snapshot, TerminalState) if snapshot is not None else None
        self.sizes = metrics.state.worker()
        if self.state is not None:
            self.sizes.terminals += 1
            self.sizes.pending += _in_memory(self.state.pending)

    def on_batch(
        self, values: list[Stamped[TerminalIn]]
    ) -> tuple[list[Stamped[TerminalOut]], bool]:
        out: list[Stamped[TerminalOut]] = []
        for value in in_arrival_order(values):
            out.extend(self._one(value))
        return out, StatefulBatchLogic.RETAIN

    def _one(self, value: Stamped[TerminalIn]) -> list[Stamped[TerminalOut]]:
        item, received, seq, origin = value
        if not isinstance(item, RoutedLabel):
            self.watermark.advance(item.transaction.epoch_seconds)
        if self.state is None:
            self.sizes.terminals += 1
            before = 0
        else:
            before = _in_memory(self.state.pending)
        try:
            self.state, out = terminal_step(self.state, item, self.config)
        except Exception as error:
            out = [_internal_rejection("terminal_state", error, item, origin)]
        if self.state is not None:
            self.sizes.pending += _in_memory(self.state.pending) - before
        if isinstance(item, RoutedLabel) and out and isinstance(out[0], LabelToLearn):
            label = item.label
            delay = label.labeled_at.timestamp() - item.transaction_time
            self.metrics.label_delay_observed(label.source, delay)
        return [(o, received, seq, None) for o in out]

    def notify_at(self) -> datetime:
        return datetime.fromtimestamp(time.time() + IDLE_CHECK_SECONDS, UTC)

    def on_notify(self) -> tuple[list[Stamped[TerminalOut]], bool]:
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        now = self.watermark.event_time
        pending = self.state.pending
        if isinstance(pending, StoredPending):
            _purge_waiting(pending, now)
        before = _in_memory(pending)
        presumed: list[Stamped[TerminalOut]] = [
            (LabelToLearn(tx_id, False, "presumed", x), time.time(), 0, None)
            for tx_id, x in pending.expire(now)
        ]
        self.sizes.pending += _in_memory(pending) - before
        if terminal_idle(self.state, now, self.config):
            self.sizes.terminals -= 1
            self.sizes.pending -= _in_memory(pending)
            return presumed, StatefulBatchLogic.DISCARD
        return presumed, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot | None:  # type: ignore[override]
        if self.state is None:  # its first item failed before it had any state
            return None
        pending = self.state.pending
        if isinstance(pending, StoredPending):
            pending.store.commit()  # the rows this snapshot refers to are on disk first
        return _freeze(self.state)


ModelItem = Stamped[ModelOut | ShardSummary]
# A model step input routed to its shard: (shard, item)
ShardIn = tuple[int, Stamped[ModelIn]]
# What the model step and the status merge hand on to the outputs
Outcome = Stamped[ModelOut | ModelStatus]


@dataclass
class _ModelSnapshot:
    """A model shard's state, its index, and when it was taken (wall clock, seconds)."""

    state: ModelState
    shard: int
    taken_at: float


class _ModelLogic(StatefulBatchLogic[ShardIn, ModelItem, Snapshot]):
    """One shard of the model step, plus a summary of its models every ``interval``
    seconds, at the end, and at once after a control message is applied (so that the
    change shows); ``_StatusLogic`` merges the shards' summaries into the models' status.

    Each batch is handled in the order its records were read (see ``in_arrival_order``).
    Built on resume, it first reads back the decisions published since its snapshot
    (``read_back``): a transaction scored again gets the decision it was published with.
    """

    def __init__(
        self,
        config: CoreConfig,
        interval: float,
        read_back: Callable[[float | None], Published],
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.interval = timedelta(seconds=interval)
        self.shard: int | None = None  # known from the snapshot, or the first item
        if snapshot is not None:
            restored = _thaw(snapshot, _ModelSnapshot)
            self.state = ensure_models(restored.state, config)
            self.shard = restored.shard
            self.published = self._own(read_back(restored.taken_at))
        else:
            self.state = new_model_state(config)
            self.published = read_back(None)
        self.next_status = datetime.now(UTC)

    def on_batch(self, values: list[ShardIn]) -> tuple[list[ModelItem], bool]:
        if self.shard is None:
            self.shard = values[0][0]
            log.info("model shard started", shard=self.shard, of=self.config.shards)
            self.published = self._own(self.published)
        out: list[ModelItem] = []
        for value in in_arrival_order([value for _, value in values]):
            out.extend(self._one(value))
        return out, StatefulBatchLogic.RETAIN

    def _own(self, published: Published) -> Published:
        """Of the decisions published, those of this shard's transactions."""
        shards, mine = self.config.shards, self.shard
        if shards == 1 or not published:
            return published
        return {k: v for k, v in published.items() if shard_of(k[1], shards) == mine}

    def _one(self, value: Stamped[ModelIn]) -> list[ModelItem]:
        item, received, seq, origin = value
        try:
            self.state, out = model_step(self.state, item, self.config, origin=origin)
        except Exception as error:
            out = [_internal_rejection("model", error, item, origin)]
        if self.published:
            out = [self._of_record(o) for o in out]
        stamped: list[ModelItem] = [(o, received, seq, None) for o in out]
        if isinstance(item, Control) and any(isinstance(o, ControlApplied) for o in out):
            return [*stamped, *self._status()[0]]
        return stamped

    def _of_record(self, out: ModelOut) -> ModelOut:
        if not isinstance(out, Scored):
            return out
        tx = out.transaction
        record = self.published.pop((tx.card_id, tx.transaction_id), None)
        return out.of_record(record) if record is not None else out

    def _status(self) -> tuple[list[ModelItem], bool]:
        self.next_status = datetime.now(UTC) + self.interval
        try:
            summary = summarize(self.state, self.shard or 0)
        except Exception as error:  # a status is not worth stopping the flow for
            _internal("model_status", error)
            return [], StatefulBatchLogic.RETAIN
        return [(summary, time.time(), 0, None)], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def on_eof(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def notify_at(self) -> datetime:
        return self.next_status

    def snapshot(self) -> Snapshot:
        if self.config.waiting_store is not None:  # the scores it refers to are on disk first
            waiting_store(Path(self.config.waiting_store), self.config.waiting_cache_mb).commit()
        return _freeze(_ModelSnapshot(self.state, self.shard or 0, time.time()))


class _StatusLogic(StatefulBatchLogic[ShardSummary, Stamped[ModelStatus], None]):
    """The models' status over every shard: each shard's latest summary, merged."""

    def __init__(self, _: None) -> None:
        self.latest: dict[int, ShardSummary] = {}

    def on_batch(self, values: list[ShardSummary]) -> tuple[list[Stamped[ModelStatus]], bool]:
        for summary in values:
            self.latest[summary.shard] = summary
        try:
            statuses = merge_statuses([self.latest[k] for k in sorted(self.latest)])
        except Exception as error:  # a status is not worth stopping the flow for
            _internal("model_status", error)
            return [], StatefulBatchLogic.RETAIN
        now = time.time()
        return [(status, now, 0, None) for status in statuses], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None  # every shard sends its summary again within an interval


def shard_keys(shards: int, settings: Settings) -> list[str]:
    """The keys of the model step's shards, one per worker as far as they go.

    Bytewax sends a key to the worker its hash picks, and two shards on one worker would
    score in turn, not side by side: each shard's key is chosen among candidates so that
    shard ``i`` lands on worker ``i`` modulo the cluster's workers. Where keys land is
    learned from Bytewax itself, by a small dataflow run in this process.
    """
    workers = max(len(settings.cluster), 1) * settings.workers
    if shards == 1 or workers == 1:
        return [f"model-{i}" for i in range(shards)]
    landing = _where_keys_land([f"model-{i}" for i in range(64 * workers)], workers)
    keys: list[str] = []
    for shard in range(shards):
        wanted = shard % workers
        key = next((k for k, w in landing.items() if w == wanted and k not in keys), None)
        keys.append(key if key is not None else f"model-shard-{shard}")
    return keys


def _where_keys_land(keys: list[str], workers: int) -> dict[str, int]:
    """The worker Bytewax sends each of ``keys`` to, in a cluster of ``workers``."""
    from bytewax.testing import TestingSource, cluster_main

    landed: dict[str, int] = {}

    class _Where(StatelessSinkPartition[str]):
        def __init__(self, worker: int) -> None:
            self.worker = worker

        def write_batch(self, items: list[str]) -> None:
            for key in items:
                landed[key] = self.worker

    class _Sink(DynamicSink[str]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Where:
            return _Where(worker_index)

    probe = Dataflow("fraudstream_shard_probe")
    keyed = op.key_on("key", op.input("keys", probe, TestingSource(keys)), _same)
    landed_on = op.stateful_map("land", keyed, _land)
    op.output("where", op.key_rm("rm", landed_on), _Sink())
    cluster_main(probe, [], 0, worker_count_per_proc=workers)
    return landed


def _same(key: str) -> str:
    return key


def _land(state: None, key: str) -> tuple[None, str]:
    return None, key


class _ReadBack:
    """Reads the decisions published since a snapshot was taken (or, without one, since
    the recovery store was made): what a resumed model step must publish again as is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Bytewax takes a key's snapshot when its epoch closes, before it lets the key
        # see the next epoch's items, so every decision to publish again was published
        # after the snapshot was taken; the margin covers clocks, and costs only a few
        # more decisions to read.
        self.margin = 2 * settings.snapshot_interval_seconds + 30.0

    def __call__(self, taken_at: float | None) -> Published:
        settings = self.settings
        since = taken_at - self.margin if taken_at is not None else store_created_at(settings)
        if since is None:
            return {}
        published = read_published(consumer_config(settings), settings.topic_decisions, since)
        log.info("resuming with decisions of record", decisions=len(published), since=since)
        return published


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

    def __call__(self, value: Outcome) -> list[tuple[str, Message]]:
        try:
            return self._route(value)
        except Exception as error:  # an outcome that cannot be published: dead-letter it
            item = value[0]
            dead = DeadLetter.of(
                RejectReason.INTERNAL_ERROR,
                _internal("route_outputs", error),
                _payload(item),
                topic=None,
            )
            _log_dead_letter(self.metrics, "route_outputs", dead)
            return [("dead_letters", _dead_letter_message(dead))]

    def _route(self, value: Outcome) -> list[tuple[str, Message]]:
        item, received, _, _ = value
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
            decision = item.record or item.to_decision().model_dump_json().encode()
            out: list[tuple[str, Message]] = [
                ("decisions", KafkaSinkMessage(key.encode(), decision))
            ]
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
    config = CoreConfig.from_settings(settings)
    if waiting is not None:
        config = dataclasses.replace(config, waiting_store=str(waiting))
        store = waiting_store(waiting, config.waiting_cache_mb, shared=settings.workers > 1)
        metrics.state.stored_pending = lambda: store.rows
    flow = Dataflow("fraudstream")
    watermark = Watermark()  # the event time each worker has reached: for idle state
    errors: list[Stream[DeadLetter]] = []
    if source is None:
        kafka_in = kop.input(
            "kafka_in",
            flow,
            brokers=settings.brokers,
            topics=[settings.topic_transactions, settings.topic_labels, settings.topic_control],
            tail=tail,
            batch_size=settings.kafka_batch_size,
            add_config=consumer_config(settings),
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
        op.stateful("card_state", by_card, partial(_CardLogic, config, metrics, watermark)),
    )
    # (CardFeatured | RoutedLabel | Rejected, received)
    to_dead_letter = partial(_rejected_to_dead_letter, settings)
    errors.append(op.filter_map("card_rejections", card_out, to_dead_letter))
    card_ok: Stream[Stamped[TerminalIn]] = op.filter_map("card_accepted", card_out, _accepted)

    by_terminal = op.key_on("key_by_terminal", card_ok, _terminal_key)
    terminal_out = op.key_rm(
        "terminal_out",
        op.stateful_batch(
            "terminal_state", by_terminal, partial(_TerminalLogic, config, metrics, watermark)
        ),
    )
    # (Featured | LabelToLearn | Rejected, received)
    errors.append(op.filter_map("terminal_rejections", terminal_out, to_dead_letter))
    terminal_ok: Stream[Stamped[ModelIn]] = op.filter_map(
        "terminal_accepted", terminal_out, _accepted
    )

    # Control messages skip the card and terminal steps: they are for the models alone.
    model_in: Stream[Stamped[ModelIn]] = op.merge("model_in", terminal_ok, controls)
    by_shard: KeyedStream[ShardIn] = op.flat_map(
        "key_by_shard", model_in, partial(_to_shards, shard_keys(config.shards, settings))
    )
    model_logic = partial(
        _ModelLogic, config, settings.status_interval_seconds, read_back or _nothing_published
    )
    shards_out = op.key_rm("model_out", op.stateful_batch("model", by_shard, model_logic))
    # (Scored | Learned | ControlApplied | Rejected | ShardSummary, received, seq, None)
    summaries = op.filter_map("shard_summaries", shards_out, _summary_or_none)
    statuses = op.key_rm(
        "status_out",
        op.stateful_batch("status", op.key_on("key_status", summaries, _status_key), _StatusLogic),
    )
    model_out: Stream[Outcome] = op.merge(
        "model_and_status", op.filter("model_outcomes", shards_out, _not_summary), statuses
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
    unroutable = op.filter_map("pick_unroutable", routed, partial(_pick, "dead_letters"))
    dead_messages = op.map("dead_letter_message", dead_letters, _dead_letter_message)
    op.output(
        "dead_letters_out",
        op.merge("all_dead_letters", dead_messages, unroutable),
        sinks.dead_letters,
    )
    return flow


def _to_shards(keys: list[str], value: Stamped[ModelIn]) -> list[tuple[str, ShardIn]]:
    item, received, seq, origin = value
    return [
        (keys[shard], (shard, (routed, received, seq, origin)))
        for shard, routed in to_shards(item, len(keys))
    ]


def _summary_or_none(value: ModelItem) -> ShardSummary | None:
    return value[0] if isinstance(value[0], ShardSummary) else None


def _not_summary(value: ModelItem) -> bool:
    return not isinstance(value[0], ShardSummary)


def _status_key(_: ShardSummary) -> str:
    return "status"


def _in_memory(pending: object) -> int:
    """Waiting features held in keyed state (those on disk are counted by their store)."""
    return len(pending) if isinstance(pending, PendingFeatures) else 0


# How often an idle card or terminal checks whether it can leave the state (wall clock).
IDLE_CHECK_SECONDS = 60.0


class Watermark:
    """The latest transaction time (event time) each worker thread of a flow has seen.

    Kept by thread id: Bytewax's workers are threads Python did not start, whose
    ``threading.local`` values do not last from one call into Python to the next.
    """

    def __init__(self) -> None:
        self._by_thread: dict[int, float] = {}

    @property
    def event_time(self) -> float:
        return self._by_thread.get(threading.get_ident(), float("-inf"))

    def advance(self, event_time: float) -> None:
        thread = threading.get_ident()
        if event_time > self._by_thread.get(thread, float("-inf")):
            self._by_thread[thread] = event_time


# When each store was last purged (wall clock), so that a worker purges once a minute.
_last_purge: dict[Path, float] = {}


def _purge_waiting(pending: StoredPending, now: float) -> None:
    """Delete the waiting features past the label horizon (and a margin), now and then."""
    path = pending.store_path
    if time.time() - _last_purge.get(path, 0.0) < IDLE_CHECK_SECONDS or now == float("-inf"):
        return
    _last_purge[path] = time.time()
    cutoff = now - pending.horizon_days * 86400.0 - PURGE_MARGIN_SECONDS
    gone = pending.store.purge_before(cutoff)
    if gone:
        log.info("waiting features purged", rows=gone, rows_left=pending.store.rows)


def in_arrival_order(values: list[Stamped[X]]) -> list[Stamped[X]]:
    """A batch of a keyed step in the order its records were read.

    A keyed step hands on its batch grouped by key: the card step by card, the terminal
    step by terminal. Two transactions of one card at two terminals, or a label and
    another card's transaction, would reach the next step out of the order they were
    read in, and terminal counts and the models, which learn from every transaction
    they score, depend on that order. Sorting by the input sequence (stable: what one
    record produced keeps its order) restores what one worker read, in that order: the
    order in which ``ScoringCore`` processes it.
    """
    return sorted(values, key=_seq)


def _seq(value: Stamped[Any]) -> int:
    return value[2]


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
    """The items a step passed on (its rejections go to the dead letters)."""
    return None if isinstance(item[0], Rejected) else item


def _rejected_to_dead_letter(settings: Settings, stamped: Stamped[object]) -> DeadLetter | None:
    item = stamped[0]
    if not isinstance(item, Rejected):
        return None
    origin = item.origin
    if origin is not None:  # the original record, whole, where it came from
        return DeadLetter.of(
            item.reason,
            item.error,
            origin.value,
            key=origin.key,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
        )
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


class DeliveryError(RuntimeError):
    """The broker refused an output for good: the epoch fails rather than lose it."""


class _DeliveredPartition(StatelessSinkPartition[Message]):
    """Writes a batch and returns only once the broker has acknowledged all of it.

    The producer is idempotent with ``acks=all``. What the broker has not taken when
    librdkafka gives up (an outage longer than ``delivery.timeout.ms``) is produced
    again, until it is taken: the flow waits for the broker rather than drop an output.
    A permanent refusal (a record too large, no authorisation) raises, which fails the
    epoch: the detector stops and resumes from its last snapshot.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def write_batch(self, items: list[Message]) -> None:
        pending = [(m.key, m.value) for m in items]
        attempt = 0
        while pending:
            failed: list[tuple[bytes | None, bytes | None, KafkaError]] = []
            for key, value in pending:
                self._produce(key, value, failed)
            self.producer.flush()
            fatal = [f for f in failed if not _retriable(f[2])]
            if fatal:
                key, value, error = fatal[0]
                raise DeliveryError(
                    f"topic {self.topic!r} refused {len(fatal)} record(s), e.g. one of "
                    f"{len(value or b'')} bytes: {error.str()}"
                )
            pending = [(key, value) for key, value, _ in failed]
            if pending:
                attempt += 1
                log.warning(
                    "outputs not delivered yet, producing them again",
                    topic=self.topic,
                    records=len(pending),
                    error=failed[0][2].str(),
                    attempt=attempt,
                )
                time.sleep(min(0.5 * attempt, 5.0))

    def _produce(
        self,
        key: bytes | None,
        value: bytes | None,
        failed: list[tuple[bytes | None, bytes | None, KafkaError]],
    ) -> None:
        def delivered(error: KafkaError | None, _msg: Any) -> None:
            if error is not None:
                failed.append((key, value, error))

        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                self.producer.poll(0)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.1)

    def close(self) -> None:
        self.producer.flush()


def _retriable(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in (
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.REQUEST_TIMED_OUT,
    )


class DeliveredSink(DynamicSink[Message]):
    """A Kafka topic as an output whose every record is acknowledged (see above)."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.config = config
        self.topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeliveredPartition:
        return _DeliveredPartition(Producer(self.config), self.topic)


def kafka_sinks(settings: Settings) -> Sinks:
    config = producer_config(settings)
    return Sinks(
        decisions=DeliveredSink(config, settings.topic_decisions),
        alerts=DeliveredSink(config, settings.topic_alerts),
        dead_letters=DeliveredSink(config, settings.topic_dead_letters),
        model_status=DeliveredSink(config, settings.topic_model_status),
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
        if not any(path.glob("part-*.sqlite3")):
            init_db_dir(path, 1)
            _mark_created(path / "part-0.sqlite3")
            log.info("recovery store created", path=str(path))
    else:
        index = settings.process_id or 0
        own = path / f"part-{index}.sqlite3"
        if not own.exists():
            with tempfile.TemporaryDirectory(dir=path) as scratch:
                init_db_dir(Path(scratch), processes)
                _mark_created(Path(scratch) / own.name)
                os.replace(Path(scratch) / own.name, own)
            log.info("recovery partition created", path=str(own), of=processes)
    return RecoveryConfig(str(path))


# A table of our own in each recovery partition says when it was made: before its first
# snapshot, a resumed detector reads back every decision published since then.
_CREATED_TABLE = "fraudstream_store"


def _mark_created(part: Path) -> None:
    with contextlib.closing(sqlite3.connect(part)) as db, db:
        db.execute(f"CREATE TABLE {_CREATED_TABLE} (created_at REAL NOT NULL, version TEXT)")
        db.execute(f"INSERT INTO {_CREATED_TABLE} VALUES (?, ?)", (time.time(), __version__))


def store_created_at(settings: Settings) -> float | None:
    """When this process's recovery partition was made (epoch seconds), if it says."""
    part = settings.recovery_path / f"part-{settings.process_id or 0}.sqlite3"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
            row = db.execute(f"SELECT MIN(created_at) FROM {_CREATED_TABLE}").fetchone()
    except sqlite3.Error:
        return None
    return float(row[0]) if row and row[0] is not None else None


def waiting_path(settings: Settings) -> Path:
    """This process's store of features waiting for labels: beside its recovery
    snapshots, whose state refers to it; without recovery, a fresh one in the home."""
    # Not "*.sqlite3": Bytewax takes every such file in the folder for a recovery partition.
    name = f"waiting-{settings.process_id or 0}.db"
    if settings.recovery:
        settings.recovery_path.mkdir(parents=True, exist_ok=True)
        return settings.recovery_path / name
    path = settings.home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(name + "-wal"), path.with_name(name + "-shm")):
        stale.unlink(missing_ok=True)  # no snapshot refers to it: start afresh
    return path


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Bytewax has no graceful stop: end the process at once. Outputs are flushed batch
    # by batch and offsets live in the last snapshot, so a restart resumes from there
    # and re-publishes at most the unfinished epoch, with the same ids.
    log.info("detector stopping", signal=signal.Signals(signum).name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_metrics(settings: Settings) -> str | None:
    """Serve the detector's /metrics; its URL (see ``metrics.metrics_port``).

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
    recovery = recovery_config(settings)  # before the waiting features land in its folder
    flow = build_flow(
        settings,
        read_back=_ReadBack(settings) if settings.recovery else None,
        waiting=waiting_path(settings),
    )
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
        recovery_config=recovery,
    )
