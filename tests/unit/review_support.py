"""What the review queue's tests share: a stopped clock, alerts, and short views of the
queue, its audit trail and its outbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api import review
from api.review import AlertFilter
from api.tables import OutboxRecord
from detector.contracts import Alert, Transaction, alert_id_for

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
LABELS = "labels"
TOPICS = review.Topics(labels=LABELS, control="control")


def ctx(session: Session, now: datetime | None = None) -> review.Context:
    """The review context of ``session``, its clock stopped at ``now`` (else the real one)."""
    context = review.Context(session, topics=TOPICS)
    return context if now is None else context.at(now)


def make_alert(
    n: int,
    *,
    card: str = "card-1",
    terminal: str = "term-1",
    score: float = 0.7,
    amount: float = 10.0,
    decision: str = "review",
    at: datetime = T0,
) -> Alert:
    transaction = Transaction(
        transaction_id=f"tx-{n}",
        timestamp=at - timedelta(seconds=1),
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        currency="EUR",
    )
    return Alert(
        alert_id=alert_id_for(card, f"tx-{n}"),
        transaction=transaction,
        score=score,
        decision=decision,  # type: ignore[arg-type]
        reasons=["amount far above the card's usual"],
        features={"amount": amount},
        model_name="logreg",
        model_version="1",
        created_at=at,
    )


def add(session: Session, *alerts: Alert) -> list[str]:
    for alert in alerts:
        assert review.ingest_alert(ctx(session, alert.created_at), alert=alert)
    return [alert.alert_id for alert in alerts]


def outbox(session: Session) -> list[OutboxRecord]:
    session.expire_all()
    return list(session.scalars(select(OutboxRecord).order_by(OutboxRecord.id)))


def actions(session: Session, alert_id: str) -> list[str]:
    return [event.action for event in review.history(ctx(session), alert_id=alert_id)]


def page(session: Session, now: datetime = T0, **filters: object) -> list[str]:
    rows, _ = review.list_alerts(ctx(session, now), filters=AlertFilter(**filters))  # type: ignore[arg-type]
    return [row.alert_id for row in rows]
