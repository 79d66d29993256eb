"""Alerts in from the detector, and read by analysts: the queue, one alert, its card's
other alerts, its audit trail and the queue's figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

import structlog
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from api.fields import ALERT_ID_MAX, DECISIONS, LABELS, NAME_MAX, PAGE_MAX, STATUSES
from api.review.errors import Invalid
from api.review.records import (
    SYSTEM_ACTOR,
    Context,
    audit,
    facts,
    item,
    load,
    storable_text,
    utc,
)
from api.schemas import AlertFacts, AlertItem, Event, QueueStats
from api.tables import AlertEventRecord, AlertRecord, OutboxRecord
from detector.contracts import Alert

log = structlog.get_logger("fraudstream.api")

SortKey = Literal["-score", "score", "-amount", "amount", "-age", "age"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)


@dataclass(frozen=True)
class AlertFilter:
    """What ``list_alerts`` returns: every field narrows, ``None`` means any.

    ``since`` and ``until`` bound the alert time (``created_at``: since inclusive, until
    exclusive); naive datetimes are taken as UTC.
    """

    status: str | None = None
    decision: str | None = None
    label: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    card_id: str | None = None
    terminal_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "-score"
    limit: int = 50
    offset: int = 0


# --- Ingest ---------------------------------------------------------------------------


def _check_alert(alert: Alert) -> None:
    transaction = alert.transaction
    storable_text("alert_id", alert.alert_id, ALERT_ID_MAX)
    if not alert.alert_id:
        raise Invalid("alert_id must not be empty")
    for what, value in (
        ("transaction_id", transaction.transaction_id),
        ("card_id", transaction.card_id),
        ("terminal_id", transaction.terminal_id),
        ("model_name", alert.model_name),
        ("model_version", alert.model_version),
    ):
        storable_text(what, value, NAME_MAX)
    # JSON has no NaN or infinity: PostgreSQL refuses them, SQLite would store invalid JSON.
    bad = sorted(name for name, number in alert.features.items() if not math.isfinite(number))
    if bad:
        raise Invalid(f"features must be finite numbers: {', '.join(bad)[:200]}")


def ingest_alert(ctx: Context, *, alert: Alert) -> bool:
    """Store a new alert; ``False`` (and no change) when its ``alert_id`` is known.

    Replays of the alerts topic are therefore harmless; so is a race between two
    consumers, which ends in an integrity error on the primary key, treated the same.
    An alert the database cannot hold (over-long ids, NUL characters, NaN features) is
    ``Invalid``: the caller should skip it, as retrying can never succeed.
    """
    session, now = ctx.session, ctx.now()
    _check_alert(alert)
    if session.get(AlertRecord, alert.alert_id) is not None:
        return False
    transaction = alert.transaction
    session.add(
        AlertRecord(
            alert_id=alert.alert_id,
            transaction_id=transaction.transaction_id,
            card_id=transaction.card_id,
            terminal_id=transaction.terminal_id,
            amount=transaction.amount,
            currency=transaction.currency,
            transaction_time=transaction.timestamp,
            score=alert.score,
            decision=alert.decision,
            reasons=list(alert.reasons),
            features=dict(alert.features),
            transaction=transaction.model_dump(mode="json"),
            model_name=alert.model_name,
            model_version=alert.model_version,
            created_at=alert.created_at,
            received_at=now,
            status="open",
            exploration=alert.exploration,
        )
    )
    try:
        session.flush()  # the alert row first: the event refers to it
        audit(
            session,
            alert.alert_id,
            now,
            SYSTEM_ACTOR,
            "received",
            decision=alert.decision,
            score=alert.score,
            model_name=alert.model_name,
            model_version=alert.model_version,
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        log.info("alert already stored", alert_id=alert.alert_id)
        return False
    return True


# --- Read -----------------------------------------------------------------------------


def _one_of(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise Invalid(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def _validated(filters: AlertFilter) -> AlertFilter:
    for name in ("card_id", "terminal_id"):
        value = getattr(filters, name)
        if value is not None and "\x00" in value:
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the driver.
            raise Invalid(f"{name} must not contain NUL characters")
    _one_of("sort", filters.sort, SORT_KEYS)
    if not 1 <= filters.limit <= PAGE_MAX:
        raise Invalid(f"limit must be between 1 and {PAGE_MAX}, not {filters.limit}")
    if filters.offset < 0:
        raise Invalid(f"offset must be 0 or more, not {filters.offset}")
    _one_of("status", filters.status, STATUSES)
    _one_of("decision", filters.decision, DECISIONS)
    _one_of("label", filters.label, LABELS)
    if (
        filters.min_score is not None
        and filters.max_score is not None
        and filters.min_score > filters.max_score
    ):
        raise Invalid("min_score must not exceed max_score")
    if (
        filters.since is not None
        and filters.until is not None
        and utc(filters.since) > utc(filters.until)
    ):
        raise Invalid("since must not be after until")
    return filters


def _status_condition(status: str, now: datetime) -> ColumnElement[bool]:
    live = and_(AlertRecord.status == "claimed", AlertRecord.claim_expires_at > now)
    if status == "claimed":
        return live
    if status == "open":
        return or_(
            AlertRecord.status == "open",
            and_(AlertRecord.status == "claimed", AlertRecord.claim_expires_at <= now),
            and_(AlertRecord.status == "claimed", AlertRecord.claim_expires_at.is_(None)),
        )
    return AlertRecord.status == "decided"


def _conditions(filters: AlertFilter, now: datetime) -> list[ColumnElement[bool]]:
    """The WHERE clause: every value is a bound parameter, never part of the SQL text."""
    conditions: list[ColumnElement[bool]] = []
    if filters.status is not None:
        conditions.append(_status_condition(filters.status, now))
    if filters.decision is not None:
        conditions.append(AlertRecord.decision == filters.decision)
    if filters.label is not None:
        conditions.append(AlertRecord.label == filters.label)
    if filters.min_score is not None:
        conditions.append(AlertRecord.score >= filters.min_score)
    if filters.max_score is not None:
        conditions.append(AlertRecord.score <= filters.max_score)
    if filters.card_id is not None:
        conditions.append(AlertRecord.card_id == filters.card_id)
    if filters.terminal_id is not None:
        conditions.append(AlertRecord.terminal_id == filters.terminal_id)
    if filters.since is not None:
        conditions.append(AlertRecord.created_at >= utc(filters.since))
    if filters.until is not None:
        conditions.append(AlertRecord.created_at < utc(filters.until))
    return conditions


# After the sort key, the oldest alert first (the one waiting longest), then the alert id
# (in list_alerts): equal scores never shuffle between two reads of the queue.
_ORDER = {
    "-score": (AlertRecord.score.desc(), AlertRecord.created_at.asc()),
    "score": (AlertRecord.score.asc(), AlertRecord.created_at.asc()),
    "-amount": (AlertRecord.amount.desc(), AlertRecord.created_at.asc()),
    "amount": (AlertRecord.amount.asc(), AlertRecord.created_at.asc()),
    "-age": (AlertRecord.created_at.desc(),),
    "age": (AlertRecord.created_at.asc(),),
}


def list_alerts(ctx: Context, *, filters: AlertFilter) -> tuple[list[AlertItem], int]:
    """One page of alerts matching ``filters`` and the number of all matching alerts.

    Ties are broken by alert id, so pages are stable: no alert appears twice or never.
    """
    now = ctx.now()
    filters = _validated(filters)
    conditions = _conditions(filters, now)
    total = ctx.session.scalar(select(func.count()).select_from(AlertRecord).where(*conditions))
    query = (
        select(AlertRecord)
        .where(*conditions)
        .order_by(*_ORDER[filters.sort], AlertRecord.alert_id.asc())
        .limit(filters.limit)
        .offset(filters.offset)
    )
    rows = [item(record, now) for record in ctx.session.scalars(query)]
    return rows, int(total or 0)


def get_alert(ctx: Context, *, alert_id: str) -> AlertFacts:
    """The alert ``alert_id`` with its transaction and features, or ``NotFound``."""
    return facts(load(ctx.session, alert_id), ctx.now())


def card_context(
    ctx: Context, *, card_id: str, exclude: str | None = None, limit: int = 20
) -> list[AlertItem]:
    """The card's other alerts, newest first: what an analyst weighs a new one against."""
    now = ctx.now()
    if "\x00" in card_id or (exclude is not None and "\x00" in exclude):
        return []
    query = select(AlertRecord).where(AlertRecord.card_id == card_id)
    if exclude is not None:
        query = query.where(AlertRecord.alert_id != exclude)
    query = query.order_by(AlertRecord.created_at.desc(), AlertRecord.alert_id.asc()).limit(
        max(1, min(limit, PAGE_MAX))
    )
    return [item(record, now) for record in ctx.session.scalars(query)]


def history(ctx: Context, *, alert_id: str) -> list[Event]:
    """The alert's audit trail, oldest first, or ``NotFound``."""
    load(ctx.session, alert_id)
    query = (
        select(AlertEventRecord)
        .where(AlertEventRecord.alert_id == alert_id)
        .order_by(AlertEventRecord.id.asc())
    )
    return [Event.model_validate(record) for record in ctx.session.scalars(query)]


def queue_stats(ctx: Context) -> QueueStats:
    """Open and claimed counts (expired claims are open), the oldest open alert's age,
    verdicts by label in the last hour and the outbox backlog."""
    session, now = ctx.session, ctx.now()
    count = func.count()
    open_, oldest = session.execute(
        select(count, func.min(AlertRecord.created_at)).where(_status_condition("open", now))
    ).one()
    claimed = session.scalar(select(count).where(_status_condition("claimed", now)))
    decided = session.scalar(select(count).where(AlertRecord.status == "decided"))
    verdicts = dict.fromkeys(LABELS, 0)
    by_label = session.execute(
        select(AlertRecord.label, count)
        .where(AlertRecord.status == "decided", AlertRecord.decided_at >= now - timedelta(hours=1))
        .group_by(AlertRecord.label)
    )
    for label, n in by_label:
        if label is not None:
            verdicts[label] = int(n)
    pending = session.scalar(
        select(count).select_from(OutboxRecord).where(OutboxRecord.sent_at.is_(None))
    )
    if oldest is not None:
        # func.min bypasses the column type on SQLite: restore an aware datetime.
        if isinstance(oldest, str):
            oldest = datetime.fromisoformat(oldest)
        oldest = utc(oldest)
    return QueueStats(
        open=int(open_ or 0),
        claimed=int(claimed or 0),
        decided=int(decided or 0),
        oldest_open_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        verdicts_last_hour=verdicts,
        outbox_pending=int(pending or 0),
    )
