"""The outbox: Kafka records written with the change they announce, sent by the relay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from api.fields import ERROR_MAX
from api.review.records import Context, transact
from api.tables import OutboxRecord


def enqueue(ctx: Context, *, topic: str, key: str, value: str, at: datetime) -> None:
    """Add a record to send to the transaction of ``ctx.session`` (committed by the caller)."""
    ctx.session.add(OutboxRecord(topic=topic, key=key, value=value, created_at=at, attempts=0))


def pending_outbox(ctx: Context, *, limit: int = 100) -> list[OutboxRecord]:
    """Records not yet delivered, oldest first (the order they must be sent in)."""
    query = (
        select(OutboxRecord)
        .where(OutboxRecord.sent_at.is_(None))
        .order_by(OutboxRecord.id.asc())
        .limit(limit)
    )
    rows = list(ctx.session.scalars(query))
    ctx.session.commit()  # end the read transaction: the relay holds its session a long time
    return rows


def mark_sent(ctx: Context, *, ids: Sequence[int]) -> None:
    """Record that the broker acknowledged these outbox rows (at ``ctx``'s time)."""
    if not ids:
        return
    statement = (
        update(OutboxRecord)
        .where(OutboxRecord.id.in_(list(ids)), OutboxRecord.sent_at.is_(None))
        .values(sent_at=ctx.now())
    )
    transact(ctx.session, "outbox", lambda: ctx.session.execute(statement))


def mark_failed(ctx: Context, *, ids: Sequence[int], error: str) -> None:
    """Count a failed delivery attempt and keep the error; the rows stay pending."""
    if not ids:
        return
    statement = (
        update(OutboxRecord)
        .where(OutboxRecord.id.in_(list(ids)), OutboxRecord.sent_at.is_(None))
        .values(attempts=OutboxRecord.attempts + 1, last_error=error[:ERROR_MAX])
    )
    transact(ctx.session, "outbox", lambda: ctx.session.execute(statement))
