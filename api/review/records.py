"""The context every review function takes, and what the sections share: reading an
alert's row, turning rows into the shapes returned, checks of stored text, transactions.

Every change commits its own transaction or rolls it all back, so an audit event and its
outbox row are written together or not at all. ``alerts.version`` is checked by every
UPDATE: a writer that lost a race gets ``Conflict`` and writes nothing. Strings
PostgreSQL cannot hold (NUL) are refused as ``Invalid`` on both databases alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from api.fields import NAME_MAX, AlertStatus
from api.review.errors import Conflict, Invalid, NotFound
from api.schemas import AlertFacts, AlertItem
from api.tables import AlertEventRecord, AlertRecord
from detector.settings import KafkaSettings, Settings

T = TypeVar("T")
Shape = TypeVar("Shape", bound=AlertItem)
SYSTEM_ACTOR = "system"


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Topics:
    """Where the outbox sends analysts' labels and admins' control messages."""

    labels: str = KafkaSettings.model_fields["topic_labels"].default
    control: str = KafkaSettings.model_fields["topic_control"].default

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        return cls(labels=settings.kafka.topic_labels, control=settings.kafka.topic_control)


class Observer(Protocol):
    """Told of each committed verdict and control change (to count it, wake the relay)."""

    def verdict(self, label: str) -> None: ...

    def control(self, action: str) -> None: ...


class Unobserved:
    """An ``Observer`` that does nothing."""

    def verdict(self, label: str) -> None:
        pass

    def control(self, action: str) -> None:
        pass


@dataclass(frozen=True)
class Context:
    """What every review function works with.

    ``session`` (each change commits its own transaction), ``clock`` (claims expire by
    it; naive times are UTC), ``topics`` (of the outbox) and ``observer``.
    """

    session: Session
    clock: Callable[[], datetime] = utc_now
    topics: Topics = field(default_factory=Topics)
    observer: Observer = field(default_factory=Unobserved)

    def now(self) -> datetime:
        return utc(self.clock())

    def at(self, now: datetime) -> Context:
        """This context with its clock stopped at ``now``."""
        return replace(self, clock=lambda: now)


# --- An alert's row --------------------------------------------------------------------


def claim_live(record: AlertRecord, now: datetime) -> bool:
    return (
        record.status == "claimed"
        and record.claim_expires_at is not None
        and record.claim_expires_at > now
    )


def effective_status(record: AlertRecord, now: datetime) -> AlertStatus:
    """The status analysts see: an expired claim is open."""
    if record.status == "claimed" and not claim_live(record, now):
        return "open"
    if record.status == "decided":
        return "decided"
    return "claimed" if record.status == "claimed" else "open"


def _shaped(shape: type[Shape], record: AlertRecord, now: datetime) -> Shape:
    status = effective_status(record, now)
    claimed = status == "claimed"
    return shape.model_validate(record).model_copy(
        update={
            "status": status,
            "claimed_by": record.claimed_by if claimed else None,
            "claim_expires_at": record.claim_expires_at if claimed else None,
        }
    )


def item(record: AlertRecord, now: datetime) -> AlertItem:
    """The alert as analysts see it at ``now``."""
    return _shaped(AlertItem, record, now)


def facts(record: AlertRecord, now: datetime) -> AlertFacts:
    """The alert as analysts see it at ``now``, with its transaction and features."""
    return _shaped(AlertFacts, record, now)


def audit(
    session: Session, alert_id: str, now: datetime, actor: str, action: str, **details: Any
) -> None:
    session.add(
        AlertEventRecord(alert_id=alert_id, at=now, actor=actor, action=action, details=details)
    )


def load(session: Session, alert_id: str) -> AlertRecord:
    if "\x00" in alert_id:
        raise NotFound(f"alert {alert_id!r} not found")
    # Always read the current row: a long-lived session may hold an old copy.
    record = session.get(AlertRecord, alert_id, populate_existing=True)
    if record is None:
        raise NotFound(f"alert {alert_id} not found")
    return record


def check_version(record: AlertRecord, expected: int | None) -> None:
    if expected is not None and record.version != expected:
        raise Conflict(
            f"alert {record.alert_id} changed meanwhile (version {record.version}, "
            f"expected {expected}): reload it and try again"
        )


def expire_stale_claim(session: Session, record: AlertRecord, now: datetime) -> None:
    """Turn an expired claim back into an open alert, leaving a trace in the audit."""
    if record.status == "claimed" and not claim_live(record, now):
        audit(
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


# --- Checks and transactions -----------------------------------------------------------


def storable_text(what: str, value: str | None, longest: int) -> None:
    """Refuse what one of the databases could not store, whatever the other accepts:
    SQLite would keep an over-long or NUL-bearing string that PostgreSQL rejects."""
    if value is None:
        return
    if len(value) > longest:
        raise Invalid(f"{what} is {len(value)} characters long; the most is {longest}")
    if "\x00" in value:
        raise Invalid(f"{what} must not contain NUL characters")


def check_actor(actor: str) -> None:
    if not actor:
        raise Invalid("the actor's name must not be empty")
    storable_text("actor", actor, NAME_MAX)


def transact(session: Session, alert_id: str, change: Callable[[], T]) -> T:
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
