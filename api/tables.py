"""The review database: alerts under review, their audit trail, the outbox, model status,
and for cases the stream's decisions and the analysts' notes on cards.

The schema is created and changed only by the Alembic migrations in ``api/migrations``;
``tests/unit/test_migrations.py`` checks that they produce exactly these tables.

Timestamps are stored in UTC and always come back timezone-aware (``UtcDateTime``), on
SQLite as well, which has no timezone type: comparing an aware and a naive datetime would
otherwise fail at run time, far from where the naive value was made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, get_args

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from api.fields import (
    ACTION_MAX,
    ALERT_ID_MAX,
    CONTROL_ID_MAX,
    DECISIONS,
    EVENT_ACTIONS,
    EVENT_KIND_MAX,
    LABELS,
    NAME_MAX,
    STATE_MAX,
    STATUSES,
    TOPIC_MAX,
)
from detector.contracts import DecisionKind

# Deterministic constraint names: the migrations name every constraint the same way, so
# that both databases (and the autogenerate comparison) agree on them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC, returned aware on every database.

    Naive datetimes are refused when written: the service never makes them, so one
    reaching the database is a bug worth failing loudly on.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given: use an aware one")
        value = value.astimezone(UTC)
        # SQLite stores text: one fixed format without an offset keeps text order equal
        # to time order, which range filters and sorting rely on.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    """A CHECK expression limiting ``column`` to ``values`` (constants, never user input)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class AlertRecord(Base):
    """One alert under review; ``version`` increases on every change (optimistic locking)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("decision", DECISIONS), name="decision"),
        CheckConstraint(f"label IS NULL OR {_in('label', LABELS)}", name="label"),
    )

    alert_id: Mapped[str] = mapped_column(String(ALERT_ID_MAX), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)
    card_id: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    terminal_id: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    amount: Mapped[float] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(3))
    transaction_time: Mapped[datetime] = mapped_column(UtcDateTime())
    score: Mapped[float] = mapped_column(Float, index=True)
    decision: Mapped[str] = mapped_column(String(STATE_MAX), index=True)
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    transaction: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_name: Mapped[str] = mapped_column(String(NAME_MAX))
    model_version: Mapped[str] = mapped_column(String(NAME_MAX))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(STATE_MAX), index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(NAME_MAX))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    label: Mapped[str | None] = mapped_column(String(STATE_MAX))
    note: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(NAME_MAX))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    version: Mapped[int] = mapped_column(Integer)
    # Put up for review as part of the unbiased sample of unalerted transactions, not by
    # its score: its verdict measures the model, and is labelled with origin exploration.
    exploration: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # SQLAlchemy adds "AND version = <read version>" to every UPDATE and raises
    # StaleDataError when another transaction changed the row in between.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class AlertEventRecord(Base):
    """The audit trail: who did what to an alert, and when."""

    __tablename__ = "alert_events"
    __table_args__ = (CheckConstraint(_in("action", EVENT_ACTIONS), name="action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(
        String(ALERT_ID_MAX), ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(NAME_MAX))
    action: Mapped[str] = mapped_column(String(ACTION_MAX))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class OutboxRecord(Base):
    """A Kafka record to send; written in the transaction of the change it announces.

    The relay sends pending rows in ``id`` order and sets ``sent_at`` after the broker's
    acknowledgement, so a crash in between resends (at least once) rather than loses.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(TOPIC_MAX))
    key: Mapped[str | None] = mapped_column(String(TOPIC_MAX))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class ModelStatusRecord(Base):
    """The latest status snapshot of each model."""

    __tablename__ = "model_status"

    model_name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(NAME_MAX))
    deciding: Mapped[bool]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    emitted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ControlEventRecord(Base):
    """The audit trail of admin changes sent to the detector."""

    __tablename__ = "control_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    control_id: Mapped[str] = mapped_column(String(CONTROL_ID_MAX), unique=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(NAME_MAX))
    action: Mapped[str] = mapped_column(String(ACTION_MAX))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class ScoreReplyRecord(Base):
    """The detector's decision of a transaction scored on request (``POST /api/score``).

    Every API process stores every reply it reads, on time or late, so that the same
    request again gets the same decision from any of them, also after a restart. Rows
    older than ``score_replies_keep_days`` are purged.
    """

    __tablename__ = "score_replies"

    card_id: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(NAME_MAX))
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class DecisionRecord(Base):
    """A decision read from the decisions topic, kept compact for the cases' timelines.

    Written a consumer batch at a time (one transaction); a transaction seen again is
    ignored. Rows stored more than ``decisions_keep_days`` ago are purged.
    """

    __tablename__ = "decisions"
    __table_args__ = (CheckConstraint(_in("decision", get_args(DecisionKind)), name="decision"),)

    transaction_id: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    card_id: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    # Searching cases by terminal reads it (a terminal has many cards).
    terminal_id: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    amount: Mapped[float] = mapped_column(Float)
    transaction_time: Mapped[datetime] = mapped_column(UtcDateTime())
    score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(STATE_MAX))
    model_name: Mapped[str] = mapped_column(String(NAME_MAX))
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class CaseNoteRecord(Base):
    """An analyst's note on a card's case; notes are only ever added."""

    __tablename__ = "case_notes"

    note_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    author: Mapped[str] = mapped_column(String(NAME_MAX))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DetectorEventRecord(Base):
    """An attack or a drift the detector noticed (``DetectorEvent``), for the review page.

    ``payload`` is the event as published; the columns are what the page filters and
    orders by. An event seen again (same ``event_id``) replaces the stored one.
    """

    __tablename__ = "detector_events"

    event_id: Mapped[str] = mapped_column(String(ALERT_ID_MAX), primary_key=True)
    kind: Mapped[str] = mapped_column(String(EVENT_KIND_MAX), index=True)
    subject: Mapped[str] = mapped_column(String(NAME_MAX))
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    since: Mapped[datetime] = mapped_column(UtcDateTime())
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
