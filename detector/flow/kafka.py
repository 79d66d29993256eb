"""Kafka at both ends of the dataflow: records in, acknowledged outputs out."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from confluent_kafka import KafkaError, Producer
from pydantic import ValidationError

from detector.contracts import (
    Control,
    DeadLetter,
    Label,
    RejectReason,
    ScoreRequest,
    Transaction,
)
from detector.flow.stamped import Event, Message, Parsed, step_error
from detector.items import Origin, RequestedTransaction
from detector.kafka_config import producer_config
from detector.settings import Settings
from detector.validation import describe_errors, parse_control, parse_event

log = structlog.get_logger(__name__)


# Kafka's "no timestamp" type (confluent_kafka.TIMESTAMP_NOT_AVAILABLE)
_NO_TIMESTAMP = 0


@dataclass
class Sinks:
    """Where the flow writes; tests swap Kafka for ``TestingSink``s."""

    decisions: Sink[Message]
    alerts: Sink[Message]
    dead_letters: Sink[Message]
    model_status: Sink[Message]
    # None: the flow's replies to score requests go nowhere (tests of other outputs)
    score_replies: Sink[Message] | None = None
    # None: the detector's events go nowhere (tests of other outputs)
    detector_events: Sink[Message] | None = None


def _received(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> float:
    """When the record was written to Kafka, or now if it says nothing."""
    stamp = msg.timestamp
    if stamp is not None and stamp[0] != _NO_TIMESTAMP and stamp[1] > 0:
        return stamp[1] / 1000.0
    return time.time()


class Parser:
    """Turns a Kafka record into an event, a control message or a dead letter."""

    def __init__(self, settings: Settings) -> None:
        self.labels_topic = settings.kafka.topic_labels
        self.control_topic = settings.kafka.topic_control
        self.requests_topic = settings.kafka.topic_score_requests
        self.max_bytes = settings.detector.max_message_bytes
        self.max_skew = timedelta(seconds=settings.detector.max_clock_skew_seconds)
        self.seq = itertools.count()

    def __call__(self, msg: KafkaSourceMessage[bytes | None, bytes | None]) -> Parsed:
        try:
            return self._parse(msg)
        except Exception as error:  # no record may stop the flow
            dead = DeadLetter.of(
                RejectReason.INTERNAL_ERROR,
                step_error("parse_and_validate", error),
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
        elif msg.topic == self.requests_topic:
            parsed = self._parse_request(msg.value)
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

    def _parse_request(self, value: bytes | None) -> Transaction | tuple[RejectReason, str]:
        """A score request's transaction, which carries the request's id on; or why not.

        The transaction is held to the very rules of ``transactions`` (``parse_event``).
        """
        if value is None:
            return RejectReason.INVALID, "empty record (no value)"
        if len(value) > self.max_bytes:
            return (
                RejectReason.OVERSIZE,
                f"record of {len(value)} bytes exceeds {self.max_bytes} bytes",
            )
        try:
            request = ScoreRequest.model_validate_json(value)
        except ValidationError as error:
            if any(e["type"] == "json_invalid" for e in error.errors()):
                return RejectReason.NOT_JSON, "not valid JSON"
            return RejectReason.INVALID, describe_errors(error.errors(include_url=False))
        checked = parse_event(
            request.transaction.model_dump_json().encode(),
            Transaction,
            max_bytes=self.max_bytes,
            max_clock_skew=self.max_skew,
        )
        if isinstance(checked, tuple):
            return checked
        return RequestedTransaction.of(request)


def kafka_error_letter(err: Any) -> DeadLetter:
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
        decisions=DeliveredSink(config, settings.kafka.topic_decisions),
        alerts=DeliveredSink(config, settings.kafka.topic_alerts),
        dead_letters=DeliveredSink(config, settings.kafka.topic_dead_letters),
        model_status=DeliveredSink(config, settings.kafka.topic_model_status),
        score_replies=DeliveredSink(config, settings.kafka.topic_score_replies),
        detector_events=DeliveredSink(config, settings.kafka.topic_detector_events),
    )
