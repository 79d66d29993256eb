"""Analysts' changes to an alert: claim, release, decide (one or many) and reopen; and
reports of frauds the detector let through.

Each publishes at most one ``Label`` on the outbox and writes one audit event per
change (a case note for a report), in the transaction of the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select

from api.fields import LABELS, NOTE_MAX
from api.review.errors import Conflict, Invalid, NotFound
from api.review.outbox import enqueue
from api.review.records import (
    Context,
    audit,
    check_actor,
    check_version,
    claim_live,
    expire_stale_claim,
    item,
    load,
    transact,
)
from api.schemas import ERROR_STATUS, AlertItem, FraudReport, VerdictItem, VerdictResult
from api.tables import AlertEventRecord, AlertRecord, CaseNoteRecord, DecisionRecord, OutboxRecord
from detector.contracts import Label

log = structlog.get_logger("fraudstream.api")

LABEL_SOURCE = "analyst"


def _validate_label(label: str) -> None:
    if label not in LABELS:
        raise Invalid(f"label must be one of {', '.join(LABELS)}, not {label!r}")


def _validate_note(note: str | None) -> str | None:
    if note is None:
        return None
    if "\x00" in note:
        raise Invalid("note must not contain NUL characters")
    if len(note) > NOTE_MAX:
        raise Invalid(f"note is {len(note)} characters long; the most is {NOTE_MAX}")
    return note


def _refuse_decided(record: AlertRecord) -> None:
    if record.status == "decided":
        raise Conflict(f"alert {record.alert_id} is already decided ({record.label})")


def _refuse_others_claim(record: AlertRecord, actor: str, now: datetime) -> None:
    if claim_live(record, now) and record.claimed_by != actor:
        raise Conflict(
            f"alert {record.alert_id} is claimed by {record.claimed_by} until "
            f"{record.claim_expires_at:%Y-%m-%d %H:%M:%S} UTC"
        )


def _change(
    ctx: Context,
    alert_id: str,
    version: int | None,
    step: Callable[[AlertRecord, datetime], None],
) -> AlertItem:
    """Load the alert, check ``version``, apply ``step`` and commit, all or nothing."""
    now = ctx.now()

    def change() -> AlertItem:
        record = load(ctx.session, alert_id)
        check_version(record, version)
        step(record, now)
        ctx.session.flush()
        return item(record, now)

    return transact(ctx.session, alert_id, change)


def _period(ttl: float | timedelta, now: datetime) -> timedelta:
    """``ttl`` as a positive duration that ends before the calendar does."""
    try:
        ttl = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
        _ = now + ttl
    except (OverflowError, ValueError) as error:
        raise Invalid(f"claim duration {ttl} is out of range") from error
    if ttl <= timedelta(0):
        raise Invalid("a claim must last a positive time")
    return ttl


def claim(
    ctx: Context,
    *,
    alert_id: str,
    actor: str,
    ttl: float | timedelta,
    version: int | None = None,
) -> AlertItem:
    """Claim an open alert for ``ttl`` (seconds or a timedelta); claiming one's own
    claim again extends it. Another analyst's live claim, or a decided alert, is a
    ``Conflict``; so is ``version`` when given and not the alert's current one."""
    check_actor(actor)
    period = _period(ttl, ctx.now())

    def step(record: AlertRecord, now: datetime) -> None:
        _refuse_decided(record)
        _refuse_others_claim(record, actor, now)
        renewed = claim_live(record, now)
        expire_stale_claim(ctx.session, record, now)
        record.status = "claimed"
        record.claimed_by = actor
        record.claim_expires_at = now + period
        expires_at = record.claim_expires_at.isoformat()
        audit(ctx.session, alert_id, now, actor, "claimed", expires_at=expires_at, renewed=renewed)

    return _change(ctx, alert_id, version, step)


def release(
    ctx: Context, *, alert_id: str, actor: str, force: bool = False, version: int | None = None
) -> AlertItem:
    """Give up one's claim; the alert is open again. Releasing an alert nobody holds is a
    no-op; another analyst's live claim is a ``Conflict`` unless ``force`` (an admin);
    a decided alert is a ``Conflict``."""
    check_actor(actor)

    def step(record: AlertRecord, now: datetime) -> None:
        _refuse_decided(record)
        if not claim_live(record, now):
            expire_stale_claim(ctx.session, record, now)
            return
        if record.claimed_by != actor and not force:
            raise Conflict(f"alert {alert_id} is claimed by {record.claimed_by}, not by {actor}")
        audit(ctx.session, alert_id, now, actor, "released", claimed_by=record.claimed_by)
        record.status = "open"
        record.claimed_by = None
        record.claim_expires_at = None

    return _change(ctx, alert_id, version, step)


def _last_verdict(ctx: Context, alert_id: str) -> str | None:
    """The label last published for the alert, from the audit (survives a reopen)."""
    details = ctx.session.scalars(
        select(AlertEventRecord.details)
        .where(
            AlertEventRecord.alert_id == alert_id,
            AlertEventRecord.action.in_(("decided", "verdict_changed")),
        )
        .order_by(AlertEventRecord.id.desc())
        .limit(1)
    ).first()
    if not details:
        return None
    label = details.get("label")
    return label if isinstance(label, str) else None


def _publish_label(ctx: Context, record: AlertRecord, label: str, now: datetime) -> None:
    value = Label(
        transaction_id=record.transaction_id,
        card_id=record.card_id,
        label=label,  # type: ignore[arg-type]  # checked by _validate_label
        source=LABEL_SOURCE,
        labeled_at=now,
        # a verdict on the exploration sample measures the model on what it allowed
        origin="exploration" if record.exploration else "alerted",
    ).model_dump_json()
    enqueue(ctx, topic=ctx.topics.labels, key=record.card_id, value=value, at=now)


def decide(
    ctx: Context,
    *,
    alert_id: str,
    actor: str,
    label: str,
    note: str | None = None,
    change: bool = False,
    version: int | None = None,
) -> AlertItem:
    """Record a verdict and queue its ``Label`` for the detector, in one transaction.

    - An open alert, one claimed by ``actor``, or one whose claim expired can be decided;
      another analyst's live claim is a ``Conflict``.
    - Deciding a decided alert with the same label is an idempotent no-op (no event, no
      outbox row); with another label it is a ``Conflict`` unless ``change`` is true,
      which records ``verdict_changed`` and queues the new label.
    - After ``reopen``, the next verdict is recorded as ``verdict_changed`` when it
      differs from the last one published; the same label again is recorded as
      ``decided`` without a new outbox row (the detector already has it).
    - ``version``, when given, must be the alert's current version (``Conflict`` if not).
    - Each published verdict is ONE outbox row (the ``Label`` JSON, source ``analyst``,
      keyed by card id, on ``ctx.topics.labels``) and ONE audit event.
    """
    now = ctx.now()
    check_actor(actor)
    _validate_label(label)
    note = _validate_note(note)

    def apply() -> AlertItem:
        record = load(ctx.session, alert_id)
        if record.status == "decided" and record.label == label:
            # Before the version check: a retried request whose first attempt succeeded
            # must still be a no-op, not a conflict with its own change.
            return item(record, now)
        check_version(record, version)
        if record.status == "decided":
            if not change:
                raise Conflict(
                    f"alert {alert_id} was already decided {record.label} by "
                    f'{record.decided_by}; reopen it, or send "change": true, to make it {label}'
                )
            previous: str | None = record.label
            action = "verdict_changed"
        else:
            _refuse_others_claim(record, actor, now)
            expire_stale_claim(ctx.session, record, now)
            previous = _last_verdict(ctx, alert_id)
            action = "verdict_changed" if previous not in (None, label) else "decided"
        publish = previous != label
        record.status = "decided"
        record.claimed_by = None
        record.claim_expires_at = None
        record.label = label
        record.note = note
        record.decided_by = actor
        record.decided_at = now
        audit(
            ctx.session,
            alert_id,
            now,
            actor,
            action,
            label=label,
            previous_label=previous,
            note=note,
            published=publish,
        )
        if publish:
            _publish_label(ctx, record, label, now)
        ctx.session.flush()
        return item(record, now)

    row = transact(ctx.session, alert_id, apply)
    log.info("verdict", alert_id=alert_id, actor=actor, label=label)
    ctx.observer.verdict(label)
    return row


def decide_many(
    ctx: Context, *, items: Iterable[VerdictItem], actor: str, change: bool = False
) -> list[VerdictResult]:
    """Decide several alerts, each in its own transaction: one failing item neither
    stops nor undoes the others. Results come in the order of ``items``."""
    results: list[VerdictResult] = []
    for verdict in items:
        try:
            row = decide(
                ctx,
                alert_id=verdict.alert_id,
                actor=actor,
                label=verdict.label,
                note=verdict.note,
                change=change,
            )
        except (NotFound, Conflict, Invalid) as error:
            status = ERROR_STATUS[error.kind or "invalid"]
            results.append(
                VerdictResult(
                    alert_id=verdict.alert_id, ok=False, status=status, detail=error.message
                )
            )
        else:
            results.append(VerdictResult(alert_id=verdict.alert_id, ok=True, status=200, alert=row))
    return results


def reopen(ctx: Context, *, alert_id: str, actor: str, version: int | None = None) -> AlertItem:
    """Put a decided alert back in the queue. Its label is cleared (the audit keeps it),
    and its next verdict, if different, is a change. An alert not decided is a
    ``Conflict``."""
    check_actor(actor)

    def step(record: AlertRecord, now: datetime) -> None:
        if record.status != "decided":
            raise Conflict(f"alert {alert_id} is not decided, so it cannot be reopened")
        audit(
            ctx.session,
            alert_id,
            now,
            actor,
            "reopened",
            previous_label=record.label,
            decided_by=record.decided_by,
            decided_at=record.decided_at.isoformat() if record.decided_at else None,
        )
        record.status = "open"
        record.label = None
        record.note = None
        record.decided_by = None
        record.decided_at = None

    return _change(ctx, alert_id, version, step)


# --- A fraud the detector let through -------------------------------------------------


def _reported_before(ctx: Context, card_id: str, transaction_id: str) -> Label | None:
    """The ``reported`` label already queued for the transaction, if any (the outbox
    keeps every label it sent)."""
    marker = f'"transaction_id":{json.dumps(transaction_id)}'
    query = (
        select(OutboxRecord.value)
        .where(
            OutboxRecord.topic == ctx.topics.labels,
            OutboxRecord.key == card_id,
            OutboxRecord.value.contains(marker, autoescape=True),
        )
        .order_by(OutboxRecord.id.asc())
    )
    for value in ctx.session.scalars(query):
        label = Label.model_validate_json(value)
        if label.transaction_id == transaction_id and label.origin == "reported":
            return label
    return None


def report_fraud(
    ctx: Context, *, transaction_id: str, card_id: str, actor: str, note: str | None = None
) -> FraudReport:
    """Report a decided transaction (an allowed one, typically) as a fraud the detector
    missed: a ``Label`` (fraud, source ``analyst``, origin ``reported``) on the outbox,
    and a note on the card's case saying who reported it and why, in one transaction.

    - ``NotFound`` when the review service keeps no decision of the transaction for
      that card (decisions are kept ``decisions_keep_days``).
    - ``Conflict`` when the transaction has an alert (decide the alert instead), or
      was reported already.
    """
    now = ctx.now()
    check_actor(actor)
    note = _validate_note(note)
    session = ctx.session

    def apply() -> FraudReport:
        decision = session.get(DecisionRecord, transaction_id)
        if decision is None or decision.card_id != card_id:
            raise NotFound(f"no decision of transaction {transaction_id} of card {card_id} is kept")
        alert_id = session.scalars(
            select(AlertRecord.alert_id).where(AlertRecord.transaction_id == transaction_id)
        ).first()
        if alert_id is not None:
            raise Conflict(
                f"transaction {transaction_id} has alert {alert_id}: decide the alert instead"
            )
        earlier = _reported_before(ctx, card_id, transaction_id)
        if earlier is not None:
            raise Conflict(
                f"transaction {transaction_id} was reported as fraud already, at "
                f"{earlier.labeled_at:%Y-%m-%d %H:%M:%S} UTC"
            )
        label = Label(
            transaction_id=transaction_id,
            card_id=card_id,
            label="fraud",
            source=LABEL_SOURCE,
            labeled_at=now,
            origin="reported",
        )
        enqueue(ctx, topic=ctx.topics.labels, key=card_id, value=label.model_dump_json(), at=now)
        text = f"Reported transaction {transaction_id} ({decision.decision}) as fraud"
        record = CaseNoteRecord(
            card_id=card_id,
            author=actor,
            text=f"{text}: {note}" if note else text,
            created_at=now,
        )
        session.add(record)
        session.flush()
        return FraudReport(
            transaction_id=transaction_id,
            card_id=card_id,
            decision=decision.decision,
            label="fraud",
            origin="reported",
            reported_by=actor,
            reported_at=now,
            note_id=record.note_id,
        )

    report = transact(session, transaction_id, apply)
    log.info("fraud reported", transaction_id=transaction_id, actor=actor)
    ctx.observer.verdict("fraud")
    return report
