"""Where outcomes go: decisions, alerts, model status, detector events and dead letters."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import structlog
from bytewax.connectors.kafka import KafkaSinkMessage
from pydantic import ValidationError

from detector.contracts import DeadLetter, ModelStatus, RejectReason, ScoreReply, ScoreRequest
from detector.flow.stamped import Message, Outcome, Stamped, payload_of, step_error
from detector.items import (
    ControlApplied,
    Learned,
    Noticed,
    Rejected,
    RequestedTransaction,
    Scored,
)
from detector.metrics import DetectorMetrics
from detector.settings import Settings

log = structlog.get_logger(__name__)


def _message(key: str, value: str) -> Message:
    return KafkaSinkMessage(key.encode(), value.encode())


class Router:
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
                step_error("route_outputs", error),
                payload_of(item),
                topic=None,
            )
            log_dead_letter(self.metrics, "route_outputs", dead)
            return [("dead_letters", dead_letter_message(dead))]

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
                exploration=item.exploration,
            )
            if item.policy is not None and item.record is None:
                self.metrics.policy(item.policy)
            key = tx.card_id
            decision = item.record or item.to_decision().model_dump_json().encode()
            out: list[tuple[str, Message]] = [
                ("decisions", KafkaSinkMessage(key.encode(), decision))
            ]
            if isinstance(tx, RequestedTransaction):  # also the answer its requester awaits
                reply = ScoreReply(
                    request_id=tx.request_id,
                    card_id=tx.card_id,
                    transaction_id=tx.transaction_id,
                    status="decided",
                    decision=item.to_decision(),
                    replied_at=datetime.now(UTC),
                )
                out.append(("score_replies", _message(key, reply.model_dump_json())))
            alert = item.to_alert()
            if alert is not None:
                out.append(("alerts", _message(key, alert.model_dump_json())))
                log.info(
                    "alert",
                    transaction_id=tx.transaction_id,
                    decision=alert.decision,
                    score=round(score, 3),
                    reason=item.reasons[0] if item.reasons else None,
                )
            return out
        if isinstance(item, Noticed):
            event = item.event
            self.metrics.noticed(event, now=time.time())
            log.warning(
                "detector event",
                event_id=event.event_id,
                kind=event.kind,
                subject=event.subject,
                summary=event.summary,
            )
            # terminal events by terminal (in order per terminal), the others by kind
            key = event.terminals[0] if event.terminals else event.kind
            return [("detector_events", _message(key, event.model_dump_json()))]
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
                rule=control.rule.name if control.rule else control.rule_name,
                list_name=control.list_entry.list_name if control.list_entry else control.list_name,
                mode=control.mode,
                requested_by=control.requested_by,
            )
        return []


def rejected_to_dead_letter(settings: Settings, stamped: Stamped[object]) -> DeadLetter | None:
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
        topic = settings.kafka.topic_control
    elif item.reason is RejectReason.UNKNOWN_TRANSACTION:
        topic = settings.kafka.topic_labels
    else:
        topic = settings.kafka.topic_transactions
    return DeadLetter.of(item.reason, item.error, item.payload, topic=topic)


def duplicate_reply(settings: Settings, stamped: Stamped[object]) -> Message | None:
    """The ``duplicate`` reply to a score request whose transaction the card step had
    already seen (decided from an earlier request or from ``transactions``).

    The request is also dead-lettered as a duplicate, like any transaction seen twice.
    """
    item = stamped[0]
    if not isinstance(item, Rejected) or item.reason is not RejectReason.DUPLICATE:
        return None
    origin = item.origin
    if origin is None or origin.topic != settings.kafka.topic_score_requests:
        return None
    try:
        request = ScoreRequest.model_validate_json(origin.value or b"")
    except ValidationError:  # cannot happen: the parser accepted this very record
        return None
    tx = request.transaction
    reply = ScoreReply(
        request_id=request.request_id,
        card_id=tx.card_id,
        transaction_id=tx.transaction_id,
        status="duplicate",
        replied_at=datetime.now(UTC),
    )
    return _message(tx.card_id, reply.model_dump_json())


def pick(name: str, pair: tuple[str, Message]) -> Message | None:
    return pair[1] if pair[0] == name else None


def dead_letter_message(item: DeadLetter) -> Message:
    return KafkaSinkMessage(b"", item.model_dump_json().encode())


def log_dead_letter(metrics: DetectorMetrics, step_id: str, item: DeadLetter) -> None:
    metrics.dead_letter(item.reason)
    log.warning(
        "dead letter",
        reason=item.reason.value,
        error=item.error[:200],
        topic=item.source_topic,
        partition=item.partition,
        offset=item.offset,
    )
