"""The decisions of transactions scored on request, kept to answer them again
(``score_replies``): one indexed read, one insert per batch of replies, a purge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from api.tables import ScoreReplyRecord
from detector.contracts import Decision, ScoreReply

Key = tuple[str, str]  # (card id, transaction id)
_TABLE: Table = ScoreReplyRecord.__table__  # type: ignore[assignment]


def stored_decision(sessions: Callable[[], Session], key: Key) -> Decision | None:
    """The stored decision of a transaction (one indexed read, no ORM bookkeeping)."""
    with sessions() as session:
        found = session.execute(
            select(_TABLE.c.decision).where(
                _TABLE.c.card_id == key[0], _TABLE.c.transaction_id == key[1]
            )
        ).scalar()
    return Decision.model_validate(found, strict=False) if found is not None else None


def store_replies(
    sessions: Callable[[], Session], replies: list[tuple[ScoreReply, datetime]]
) -> int:
    """Store the decisions of ``replies`` in one statement; one already stored (by this
    or another API process) is kept. Returns the rows added."""
    rows: dict[Key, dict[str, object]] = {}
    for reply, at in replies:
        assert reply.decision is not None
        rows.setdefault(
            (reply.card_id, reply.transaction_id),
            {
                "card_id": reply.card_id,
                "transaction_id": reply.transaction_id,
                "request_id": reply.request_id,
                "decision": reply.decision.model_dump(mode="json"),
                "stored_at": at,
            },
        )
    with sessions() as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(_TABLE).values(list(rows.values()))  # one statement, many rows
        added = session.execute(
            statement.on_conflict_do_nothing(
                index_elements=["card_id", "transaction_id"]
            ).returning(_TABLE.c.card_id)
        ).all()
        session.commit()
    return len(added)


def purge_replies(sessions: Callable[[], Session], before: datetime) -> int:
    with sessions() as session:
        result = session.execute(delete(_TABLE).where(_TABLE.c.stored_at < before))
        session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
