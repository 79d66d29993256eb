"""The analysts' review queue: alerts in, verdicts out, every change audited.

Plain functions on a synchronous SQLAlchemy ``Session``, free of HTTP concerns, so that
the routes, the Kafka bridge and the tests share one implementation of the rules.

Public API
----------
Errors (each carries a human-readable message as ``str(error)``):
    ``ReviewError`` (base), ``NotFound``, ``Conflict`` (claimed by someone else, stale
    version, conflicting second verdict), ``Invalid`` (bad label, filter, note ...).
Records returned (detached, plain dataclasses): ``AlertRow``, ``Event``, ``ItemResult``,
    ``QueueStats``, ``OutboxRow``, ``StatusRow``, ``ControlRow``; query object
    ``AlertFilter``; protocol ``VerdictItem`` (anything with ``alert_id``, ``label``,
    ``note``) and its ready-made ``Verdict``; constants ``SORT_KEYS``, ``MAX_LIMIT``,
    ``MAX_NOTE``.
Ingest: ``ingest_alert``, ``ingest_status`` (``Invalid`` for a record no database could
    store, e.g. a NaN feature or a NUL character: skip it, retrying cannot help).
Read: ``list_alerts``, ``get_alert``, ``card_context``, ``history``, ``queue_stats``,
    ``model_statuses``, ``get_model_status``, ``control_history``.
Change: ``claim``, ``release``, ``decide``, ``decide_many``, ``reopen``,
    ``record_control``.
Outbox relay: ``pending_outbox``, ``mark_sent``, ``mark_failed``.

Transactions: every function that changes something commits its own transaction on
success and rolls it back on failure, so an audit event and its outbox row are written
together or not at all. Optimistic concurrency: ``alerts.version`` is checked by every
UPDATE (SQLAlchemy's ``version_id_col``); a writer that lost a race gets ``Conflict``
and writes nothing, so two analysts deciding the same alert at once produce one verdict
and one outbox row.

Hostile input: filter values are bound parameters, never SQL text; sort keys come from
a fixed table. Strings PostgreSQL cannot hold (NUL) are refused as ``Invalid`` (or
``NotFound`` for an id), so both databases answer alike.

Claims expire: a claim past ``claim_expires_at`` counts as open everywhere (listing,
claiming, deciding), and the next change to such an alert records ``claim_expired``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar, get_args

import structlog
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from api.tables import (
    AlertEventRecord,
    AlertRecord,
    ControlEventRecord,
    ModelStatusRecord,
    OutboxRecord,
)
from detector.contracts import Alert, Control, Label, ModelStatus

log = structlog.get_logger("fraudstream.api")

Status = Literal["open", "claimed", "decided"]
SortKey = Literal["-score", "score", "-amount", "amount", "-age", "age"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
STATUSES: tuple[str, ...] = get_args(Status)
DECISIONS = ("review", "block")
LABELS = ("fraud", "legit")
MAX_LIMIT = 500
MAX_NOTE = 2000
MAX_ERROR = 2000
SYSTEM_ACTOR = "system"
LABEL_SOURCE = "analyst"
CONTROL_KEY = "model"

T = TypeVar("T")


# --- Errors ---------------------------------------------------------------------------


class ReviewError(Exception):
    """A request the review rules refuse; ``str(error)`` is a message for people."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ReviewError):
    """No such alert (or model, or control)."""


class Conflict(ReviewError):
    """The alert's state forbids the change: claimed by someone else, changed meanwhile,
    or already decided otherwise."""


class Invalid(ReviewError):
    """The request itself is malformed: a bad label, filter, sort or note."""


# --- Records returned -----------------------------------------------------------------


@dataclass(frozen=True)
class AlertRow:
    """An alert as analysts see it; ``status`` already treats expired claims as open."""

    alert_id: str
    transaction_id: str
    card_id: str
    terminal_id: str
    amount: float
    currency: str | None
    transaction_time: datetime
    score: float
    decision: str
    reasons: list[str]
    features: dict[str, float]
    transaction: dict[str, Any]
    model_name: str
    model_version: str
    created_at: datetime
    received_at: datetime
    status: Status
    claimed_by: str | None
    claim_expires_at: datetime | None
    label: str | None
    note: str | None
    decided_by: str | None
    decided_at: datetime | None
    version: int


@dataclass(frozen=True)
class Event:
    """One audit event of an alert."""

    id: int
    alert_id: str
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of ``decide_many``: ``alert`` when ok, else ``error``.

    ``error_kind`` is ``"not_found"``, ``"conflict"`` or ``"invalid"`` (for HTTP codes).
    """

    alert_id: str
    ok: bool
    alert: AlertRow | None = None
    error: str | None = None
    error_kind: Literal["not_found", "conflict", "invalid"] | None = None


@dataclass(frozen=True)
class QueueStats:
    """The queue at a glance."""

    open: int
    claimed: int
    decided: int
    oldest_open_age_seconds: float | None
    verdicts_last_hour: dict[str, int]
    outbox_pending: int


@dataclass(frozen=True)
class OutboxRow:
    """A record waiting for the relay to send it."""

    id: int
    topic: str
    key: str | None
    value: str
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class StatusRow:
    """The latest status of one model and when the service received it."""

    status: ModelStatus
    received_at: datetime


@dataclass(frozen=True)
class ControlRow:
    """One admin change sent to the detector."""

    id: int
    control_id: str
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


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


class VerdictItem(Protocol):
    """One verdict of ``decide_many`` (a pydantic model with these fields will do)."""

    @property
    def alert_id(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def note(self) -> str | None: ...


@dataclass(frozen=True)
class Verdict:
    """A ready-made ``VerdictItem``."""

    alert_id: str
    label: str
    note: str | None = None


# --- Helpers --------------------------------------------------------------------------


def _finite_json(value: object) -> bool:
    """True when ``value`` (parsed JSON) holds no NaN or infinity, which JSON cannot hold."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite_json(item) for item in value)
    return True


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _claim_live(record: AlertRecord, now: datetime) -> bool:
    return (
        record.status == "claimed"
        and record.claim_expires_at is not None
        and record.claim_expires_at > now
    )


def _effective_status(record: AlertRecord, now: datetime) -> Status:
    if record.status == "claimed" and not _claim_live(record, now):
        return "open"
    if record.status == "decided":
        return "decided"
    return "claimed" if record.status == "claimed" else "open"


def _row(record: AlertRecord, now: datetime) -> AlertRow:
    status = _effective_status(record, now)
    claimed = status == "claimed"
    return AlertRow(
        alert_id=record.alert_id,
        transaction_id=record.transaction_id,
        card_id=record.card_id,
        terminal_id=record.terminal_id,
        amount=record.amount,
        currency=record.currency,
        transaction_time=record.transaction_time,
        score=record.score,
        decision=record.decision,
        reasons=list(record.reasons),
        features=dict(record.features),
        transaction=dict(record.transaction),
        model_name=record.model_name,
        model_version=record.model_version,
        created_at=record.created_at,
        received_at=record.received_at,
        status=status,
        claimed_by=record.claimed_by if claimed else None,
        claim_expires_at=record.claim_expires_at if claimed else None,
        label=record.label,
        note=record.note,
        decided_by=record.decided_by,
        decided_at=record.decided_at,
        version=record.version,
    )


def _event(record: AlertEventRecord) -> Event:
    return Event(
        id=record.id,
        alert_id=record.alert_id,
        at=record.at,
        actor=record.actor,
        action=record.action,
        details=dict(record.details),
    )


def _audit(
    session: Session, alert_id: str, now: datetime, actor: str, action: str, **details: Any
) -> None:
    session.add(
        AlertEventRecord(alert_id=alert_id, at=now, actor=actor, action=action, details=details)
    )


def _load(session: Session, alert_id: str) -> AlertRecord:
    if "\x00" in alert_id:
        raise NotFound(f"alert {alert_id!r} not found")
    # Always read the current row: a long-lived session may hold an old copy.
    record = session.get(AlertRecord, alert_id, populate_existing=True)
    if record is None:
        raise NotFound(f"alert {alert_id} not found")
    return record


def _check_version(record: AlertRecord, expected: int | None) -> None:
    if expected is not None and record.version != expected:
        raise Conflict(
            f"alert {record.alert_id} changed meanwhile (version {record.version}, "
            f"expected {expected}): reload it and try again"
        )


def _expire_stale_claim(session: Session, record: AlertRecord, now: datetime) -> None:
    """Turn an expired claim back into an open alert, leaving a trace in the audit."""
    if record.status == "claimed" and not _claim_live(record, now):
        _audit(
            session,
            record.alert_id,
            now,
            SYSTEM_ACTOR,
            "claim_expired",
            claimed_by=record.claimed_by,
            expired_at=record.claim_expires_at.isoformat() if record.claim_expires_at else None,
        )
        record.status = "open"
        record.claimed_by = None
        record.claim_expires_at = None


def _transact(session: Session, alert_id: str, change: Callable[[], T]) -> T:
    """Run ``change`` and commit; on any failure roll back, and report a lost race
    (another transaction updated the alert first) as ``Conflict``."""
    try:
        result = change()
        session.commit()
    except StaleDataError as error:
        session.rollback()
        raise Conflict(
            f"alert {alert_id} was changed by someone else meanwhile: reload it and try again"
        ) from error
    except BaseException:
        session.rollback()
        raise
    return result


def _check_actor(actor: str) -> None:
    if not actor:
        raise Invalid("the actor's name must not be empty")
    _storable_text("actor", actor, _NAME_MAX)


def _validate_label(label: str) -> None:
    if label not in LABELS:
        raise Invalid(f"label must be one of {', '.join(LABELS)}, not {label!r}")


def _validate_note(note: str | None) -> str | None:
    if note is None:
        return None
    if "\x00" in note:
        raise Invalid("note must not contain NUL characters")
    if len(note) > MAX_NOTE:
        raise Invalid(f"note is {len(note)} characters long; the most is {MAX_NOTE}")
    return note


def _last_verdict(session: Session, alert_id: str) -> str | None:
    """The label last published for the alert, from the audit (survives a reopen)."""
    details = session.scalars(
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


def _publish_label(
    session: Session, record: AlertRecord, label: str, now: datetime, topic_labels: str
) -> None:
    value = Label(
        transaction_id=record.transaction_id,
        card_id=record.card_id,
        label=label,  # type: ignore[arg-type]  # checked by _validate_label
        source=LABEL_SOURCE,
        labeled_at=now,
    ).model_dump_json()
    session.add(
        OutboxRecord(
            topic=topic_labels, key=record.card_id, value=value, created_at=now, attempts=0
        )
    )


# --- Ingest ---------------------------------------------------------------------------

# Column widths of the text columns filled from Kafka records (see api/tables.py).
_ALERT_ID_MAX = 36
_NAME_MAX = 128
_CONTROL_ID_MAX = 64


def _storable_text(what: str, value: str | None, longest: int) -> None:
    """Refuse what one of the databases could not store, whatever the other accepts:
    SQLite would keep an over-long or NUL-bearing string that PostgreSQL rejects."""
    if value is None:
        return
    if len(value) > longest:
        raise Invalid(f"{what} is {len(value)} characters long; the most is {longest}")
    if "\x00" in value:
        raise Invalid(f"{what} must not contain NUL characters")


def _check_alert(alert: Alert) -> None:
    transaction = alert.transaction
    _storable_text("alert_id", alert.alert_id, _ALERT_ID_MAX)
    if not alert.alert_id:
        raise Invalid("alert_id must not be empty")
    for what, value in (
        ("transaction_id", transaction.transaction_id),
        ("card_id", transaction.card_id),
        ("terminal_id", transaction.terminal_id),
        ("model_name", alert.model_name),
        ("model_version", alert.model_version),
    ):
        _storable_text(what, value, _NAME_MAX)
    # JSON has no NaN or infinity: PostgreSQL refuses them, SQLite would store invalid JSON.
    bad = sorted(name for name, number in alert.features.items() if not math.isfinite(number))
    if bad:
        raise Invalid(f"features must be finite numbers: {', '.join(bad)[:200]}")


def ingest_alert(session: Session, alert: Alert, now: datetime | None = None) -> bool:
    """Store a new alert; ``False`` (and no change) when its ``alert_id`` is known.

    Replays of the alerts topic are therefore harmless; so is a race between two
    consumers, which ends in an integrity error on the primary key, treated the same.
    An alert the database cannot hold (over-long ids, NUL characters, NaN features) is
    ``Invalid``: the caller should skip it, as retrying can never succeed.
    """
    now = _utc(now) if now is not None else datetime.now(UTC)
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
        )
    )
    try:
        session.flush()  # the alert row first: the event refers to it
        _audit(
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


def ingest_status(session: Session, status: ModelStatus, now: datetime | None = None) -> None:
    """Keep the latest status of each model; an older snapshot arriving late is ignored.

    A status the database cannot hold (over-long names, NUL, NaN figures) is ``Invalid``.
    """
    now = _utc(now) if now is not None else datetime.now(UTC)
    _storable_text("model_name", status.model_name, _NAME_MAX)
    _storable_text("model_version", status.model_version, _NAME_MAX)
    if not _finite_json(status.model_dump(mode="json")):
        raise Invalid(f"status of model {status.model_name} holds a NaN or infinite number")
    payload = status.model_dump(mode="json")
    for _attempt in range(2):
        record = session.get(ModelStatusRecord, status.model_name, populate_existing=True)
        if record is not None and record.emitted_at > status.emitted_at:
            return
        if record is None:
            record = ModelStatusRecord(model_name=status.model_name)
            session.add(record)
        record.model_version = status.model_version
        record.deciding = status.deciding
        record.payload = payload
        record.emitted_at = status.emitted_at
        record.received_at = now
        try:
            session.commit()
            return
        except IntegrityError:
            # Another writer inserted the same model first: update its row instead.
            session.rollback()
    raise Conflict(f"status of model {status.model_name} could not be stored")


# --- Read -----------------------------------------------------------------------------


def _validated(filters: AlertFilter) -> AlertFilter:
    for name in ("card_id", "terminal_id"):
        value = getattr(filters, name)
        if value is not None and "\x00" in value:
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the driver.
            raise Invalid(f"{name} must not contain NUL characters")
    if filters.sort not in SORT_KEYS:
        raise Invalid(f"sort must be one of {', '.join(SORT_KEYS)}, not {filters.sort!r}")
    if not 1 <= filters.limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}, not {filters.limit}")
    if filters.offset < 0:
        raise Invalid(f"offset must be 0 or more, not {filters.offset}")
    if filters.status is not None and filters.status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}, not {filters.status!r}")
    if filters.decision is not None and filters.decision not in DECISIONS:
        raise Invalid(f"decision must be one of {', '.join(DECISIONS)}, not {filters.decision!r}")
    if filters.label is not None and filters.label not in LABELS:
        raise Invalid(f"label must be one of {', '.join(LABELS)}, not {filters.label!r}")
    if (
        filters.min_score is not None
        and filters.max_score is not None
        and filters.min_score > filters.max_score
    ):
        raise Invalid("min_score must not exceed max_score")
    if (
        filters.since is not None
        and filters.until is not None
        and _utc(filters.since) > _utc(filters.until)
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
        conditions.append(AlertRecord.created_at >= _utc(filters.since))
    if filters.until is not None:
        conditions.append(AlertRecord.created_at < _utc(filters.until))
    return conditions


_ORDER = {
    "-score": (AlertRecord.score.desc(), AlertRecord.created_at.asc()),
    "score": (AlertRecord.score.asc(), AlertRecord.created_at.asc()),
    "-amount": (AlertRecord.amount.desc(), AlertRecord.created_at.asc()),
    "amount": (AlertRecord.amount.asc(), AlertRecord.created_at.asc()),
    "-age": (AlertRecord.created_at.desc(),),
    "age": (AlertRecord.created_at.asc(),),
}


def list_alerts(
    session: Session, filters: AlertFilter, now: datetime | None = None
) -> tuple[list[AlertRow], int]:
    """One page of alerts matching ``filters`` and the number of all matching alerts.

    Ties are broken by alert id, so pages are stable: no alert appears twice or never.
    """
    now = _utc(now) if now is not None else datetime.now(UTC)
    filters = _validated(filters)
    conditions = _conditions(filters, now)
    total = session.scalar(select(func.count()).select_from(AlertRecord).where(*conditions))
    query = (
        select(AlertRecord)
        .where(*conditions)
        .order_by(*_ORDER[filters.sort], AlertRecord.alert_id.asc())
        .limit(filters.limit)
        .offset(filters.offset)
    )
    rows = [_row(record, now) for record in session.scalars(query)]
    return rows, int(total or 0)


def get_alert(session: Session, alert_id: str, now: datetime | None = None) -> AlertRow:
    """The alert ``alert_id``, or ``NotFound``."""
    now = _utc(now) if now is not None else datetime.now(UTC)
    return _row(_load(session, alert_id), now)


def card_context(
    session: Session,
    card_id: str,
    exclude: str | None = None,
    limit: int = 20,
    now: datetime | None = None,
) -> list[AlertRow]:
    """The card's other alerts, newest first: what an analyst weighs a new one against."""
    now = _utc(now) if now is not None else datetime.now(UTC)
    if "\x00" in card_id or (exclude is not None and "\x00" in exclude):
        return []
    query = select(AlertRecord).where(AlertRecord.card_id == card_id)
    if exclude is not None:
        query = query.where(AlertRecord.alert_id != exclude)
    query = query.order_by(AlertRecord.created_at.desc(), AlertRecord.alert_id.asc()).limit(
        max(1, min(limit, MAX_LIMIT))
    )
    return [_row(record, now) for record in session.scalars(query)]


def history(session: Session, alert_id: str) -> list[Event]:
    """The alert's audit trail, oldest first, or ``NotFound``."""
    _load(session, alert_id)
    query = (
        select(AlertEventRecord)
        .where(AlertEventRecord.alert_id == alert_id)
        .order_by(AlertEventRecord.id.asc())
    )
    return [_event(record) for record in session.scalars(query)]


def queue_stats(session: Session, now: datetime | None = None) -> QueueStats:
    """Open and claimed counts (expired claims are open), the oldest open alert's age,
    verdicts by label in the last hour and the outbox backlog."""
    now = _utc(now) if now is not None else datetime.now(UTC)
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
        oldest = _utc(oldest)
    return QueueStats(
        open=int(open_ or 0),
        claimed=int(claimed or 0),
        decided=int(decided or 0),
        oldest_open_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        verdicts_last_hour=verdicts,
        outbox_pending=int(pending or 0),
    )


# --- Change ---------------------------------------------------------------------------


def claim(
    session: Session,
    alert_id: str,
    actor: str,
    now: datetime,
    ttl: float | timedelta,
    version: int | None = None,
) -> AlertRow:
    """Claim an open alert for ``ttl`` (seconds or a timedelta); claiming one's own
    claim again extends it. Another analyst's live claim, or a decided alert, is a
    ``Conflict``; so is ``version`` when given and not the alert's current one."""
    now = _utc(now)
    _check_actor(actor)
    try:
        ttl = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
        _ = now + ttl  # a claim must end before the calendar does
    except (OverflowError, ValueError) as error:
        raise Invalid(f"claim duration {ttl} is out of range") from error
    if ttl <= timedelta(0):
        raise Invalid("a claim must last a positive time")

    def change() -> AlertRow:
        record = _load(session, alert_id)
        _check_version(record, version)
        if record.status == "decided":
            raise Conflict(f"alert {alert_id} is already decided ({record.label})")
        if _claim_live(record, now) and record.claimed_by != actor:
            raise Conflict(
                f"alert {alert_id} is claimed by {record.claimed_by} until "
                f"{record.claim_expires_at:%Y-%m-%d %H:%M:%S} UTC"
            )
        renewed = _claim_live(record, now)
        _expire_stale_claim(session, record, now)
        record.status = "claimed"
        record.claimed_by = actor
        record.claim_expires_at = now + ttl
        _audit(
            session,
            alert_id,
            now,
            actor,
            "claimed",
            expires_at=record.claim_expires_at.isoformat(),
            renewed=renewed,
        )
        session.flush()
        return _row(record, now)

    return _transact(session, alert_id, change)


def release(
    session: Session,
    alert_id: str,
    actor: str,
    now: datetime,
    force: bool = False,
    version: int | None = None,
) -> AlertRow:
    """Give up one's claim; the alert is open again. Releasing an alert nobody holds is a
    no-op; another analyst's live claim is a ``Conflict`` unless ``force`` (an admin);
    a decided alert is a ``Conflict``."""
    now = _utc(now)
    _check_actor(actor)

    def change() -> AlertRow:
        record = _load(session, alert_id)
        _check_version(record, version)
        if record.status == "decided":
            raise Conflict(f"alert {alert_id} is already decided ({record.label})")
        if not _claim_live(record, now):
            if record.status == "claimed":
                _expire_stale_claim(session, record, now)
                session.flush()
            return _row(record, now)
        if record.claimed_by != actor and not force:
            raise Conflict(f"alert {alert_id} is claimed by {record.claimed_by}, not by {actor}")
        _audit(session, alert_id, now, actor, "released", claimed_by=record.claimed_by)
        record.status = "open"
        record.claimed_by = None
        record.claim_expires_at = None
        session.flush()
        return _row(record, now)

    return _transact(session, alert_id, change)


def decide(
    session: Session,
    alert_id: str,
    actor: str,
    label: str,
    note: str | None,
    now: datetime,
    topic_labels: str,
    change: bool = False,
    version: int | None = None,
) -> AlertRow:
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
      keyed by card id, on ``topic_labels``) and ONE audit event.
    """
    now = _utc(now)
    _check_actor(actor)
    _validate_label(label)
    note = _validate_note(note)

    def apply() -> AlertRow:
        record = _load(session, alert_id)
        if record.status == "decided" and record.label == label:
            # Before the version check: a retried request whose first attempt succeeded
            # must still be a no-op, not a conflict with its own change.
            return _row(record, now)
        _check_version(record, version)
        if record.status == "decided":
            if not change:
                raise Conflict(
                    f"alert {alert_id} was already decided {record.label} by "
                    f'{record.decided_by}; reopen it, or send "change": true, to make it {label}'
                )
            previous: str | None = record.label
            action = "verdict_changed"
        else:
            if _claim_live(record, now) and record.claimed_by != actor:
                raise Conflict(
                    f"alert {alert_id} is claimed by {record.claimed_by} until "
                    f"{record.claim_expires_at:%Y-%m-%d %H:%M:%S} UTC"
                )
            _expire_stale_claim(session, record, now)
            previous = _last_verdict(session, alert_id)
            action = "verdict_changed" if previous not in (None, label) else "decided"
        publish = previous != label
        record.status = "decided"
        record.claimed_by = None
        record.claim_expires_at = None
        record.label = label
        record.note = note
        record.decided_by = actor
        record.decided_at = now
        _audit(
            session,
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
            _publish_label(session, record, label, now, topic_labels)
        session.flush()
        return _row(record, now)

    row = _transact(session, alert_id, apply)
    log.info("verdict", alert_id=alert_id, actor=actor, label=label)
    return row


def decide_many(
    session: Session,
    items: Iterable[VerdictItem],
    actor: str,
    now: datetime,
    topic_labels: str,
    change: bool = False,
) -> list[ItemResult]:
    """Decide several alerts, each in its own transaction: one failing item neither
    stops nor undoes the others. Results come in the order of ``items``."""
    results: list[ItemResult] = []
    for item in items:
        try:
            row = decide(
                session, item.alert_id, actor, item.label, item.note, now, topic_labels, change
            )
        except NotFound as error:
            results.append(ItemResult(item.alert_id, False, None, error.message, "not_found"))
        except Conflict as error:
            results.append(ItemResult(item.alert_id, False, None, error.message, "conflict"))
        except Invalid as error:
            results.append(ItemResult(item.alert_id, False, None, error.message, "invalid"))
        else:
            results.append(ItemResult(item.alert_id, True, row))
    return results


def reopen(
    session: Session, alert_id: str, actor: str, now: datetime, version: int | None = None
) -> AlertRow:
    """Put a decided alert back in the queue. Its label is cleared (the audit keeps it),
    and its next verdict, if different, is a change. An alert not decided is a
    ``Conflict``."""
    now = _utc(now)
    _check_actor(actor)

    def change() -> AlertRow:
        record = _load(session, alert_id)
        _check_version(record, version)
        if record.status != "decided":
            raise Conflict(f"alert {alert_id} is not decided, so it cannot be reopened")
        _audit(
            session,
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
        session.flush()
        return _row(record, now)

    return _transact(session, alert_id, change)


# --- Models and control ---------------------------------------------------------------


def model_statuses(session: Session) -> list[StatusRow]:
    """The latest status of every model, by name."""
    query = select(ModelStatusRecord).order_by(ModelStatusRecord.model_name)
    return [
        StatusRow(ModelStatus.model_validate(r.payload, strict=False), r.received_at)
        for r in session.scalars(query)
    ]


def get_model_status(session: Session, model_name: str) -> StatusRow:
    """The latest status of ``model_name``, or ``NotFound``."""
    record = session.get(ModelStatusRecord, model_name)
    if record is None:
        raise NotFound(f"no status received from model {model_name}")
    return StatusRow(ModelStatus.model_validate(record.payload, strict=False), record.received_at)


def record_control(
    session: Session, control: Control, topic_control: str, now: datetime | None = None
) -> ControlRow:
    """Audit an admin's change and queue it for the detector, in one transaction.

    A control id already recorded is a ``Conflict`` (ids are unique; a retry with the
    same id must not send the change twice).
    """
    now = _utc(now) if now is not None else datetime.now(UTC)
    _storable_text("control_id", control.control_id, _CONTROL_ID_MAX)
    _check_actor(control.requested_by)
    record = ControlEventRecord(
        control_id=control.control_id,
        at=control.requested_at,
        actor=control.requested_by,
        action=control.action,
        details=control.model_dump(mode="json"),
    )

    def change() -> ControlRow:
        session.add(record)
        session.add(
            OutboxRecord(
                topic=topic_control,
                key=CONTROL_KEY,
                value=control.model_dump_json(),
                created_at=now,
                attempts=0,
            )
        )
        session.flush()
        return _control_row(record)

    try:
        return _transact(session, control.control_id, change)
    except IntegrityError as error:
        raise Conflict(f"control {control.control_id} was already recorded") from error


def _control_row(record: ControlEventRecord) -> ControlRow:
    return ControlRow(
        id=record.id,
        control_id=record.control_id,
        at=record.at,
        actor=record.actor,
        action=record.action,
        details=dict(record.details),
    )


def control_history(session: Session, limit: int = 100, offset: int = 0) -> list[ControlRow]:
    """Admin changes, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if offset < 0:
        raise Invalid(f"offset must be 0 or more, not {offset}")
    query = (
        select(ControlEventRecord)
        .order_by(ControlEventRecord.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_control_row(record) for record in session.scalars(query)]


# --- Outbox ---------------------------------------------------------------------------


def pending_outbox(session: Session, limit: int = 100) -> list[OutboxRow]:
    """Records not yet delivered, oldest first (the order they must be sent in)."""
    query = (
        select(OutboxRecord)
        .where(OutboxRecord.sent_at.is_(None))
        .order_by(OutboxRecord.id.asc())
        .limit(limit)
    )
    rows = [
        OutboxRow(r.id, r.topic, r.key, r.value, r.created_at, r.attempts, r.last_error)
        for r in session.scalars(query)
    ]
    session.commit()  # end the read transaction: the relay holds its session a long time
    return rows


def mark_sent(session: Session, ids: Sequence[int], now: datetime | None = None) -> None:
    """Record that the broker acknowledged these outbox rows."""
    if not ids:
        return
    now = _utc(now) if now is not None else datetime.now(UTC)
    statement = (
        update(OutboxRecord)
        .where(OutboxRecord.id.in_(list(ids)), OutboxRecord.sent_at.is_(None))
        .values(sent_at=now)
    )
    _transact(session, "outbox", lambda: session.execute(statement))


def mark_failed(session: Session, ids: Sequence[int], error: str) -> None:
    """Count a failed delivery attempt and keep the error; the rows stay pending."""
    if not ids:
        return
    statement = (
        update(OutboxRecord)
        .where(OutboxRecord.id.in_(list(ids)), OutboxRecord.sent_at.is_(None))
        .values(attempts=OutboxRecord.attempts + 1, last_error=error[:MAX_ERROR])
    )
    _transact(session, "outbox", lambda: session.execute(statement))


__all__ = [
    "AlertFilter",
    "AlertRow",
    "Conflict",
    "ControlRow",
    "Event",
    "Invalid",
    "ItemResult",
    "NotFound",
    "OutboxRow",
    "QueueStats",
    "ReviewError",
    "StatusRow",
    "Verdict",
    "VerdictItem",
    "card_context",
    "claim",
    "control_history",
    "decide",
    "decide_many",
    "get_alert",
    "get_model_status",
    "history",
    "ingest_alert",
    "ingest_status",
    "list_alerts",
    "mark_failed",
    "mark_sent",
    "model_statuses",
    "pending_outbox",
    "queue_stats",
    "record_control",
    "release",
    "reopen",
]
