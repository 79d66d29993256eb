"""Cases: a card's alerts within a window, the card's decisions, and analysts' notes.

A case is every alert of a card whose transaction time lies within ``window`` (the
``case_window_hours`` setting) before the card's newest alert; its id is the card id.
Cases are grouped in SQL, so listing them reads each alert once and a case's detail
reads only its card's rows (through the ``card_id`` indexes).

The decisions topic feeds the timelines: ``ingest_decisions`` stores a consumer batch in
one statement and one transaction (a transaction seen again is ignored) and
``purge_decisions`` drops what was stored before a cutoff. A case verdict is the batch
verdict (``decide_many``) of the case's open alerts, so claims, the audit trail and the
labels on Kafka work as they do for single alerts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Interval,
    Row,
    Subquery,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    union,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from api.fields import NAME_MAX, NOTE_MAX, PAGE_MAX
from api.review.errors import Invalid, NotFound
from api.review.records import Context, check_actor, item, storable_text, transact, utc
from api.review.verdicts import decide_many
from api.schemas import (
    AlertItem,
    CaseDetail,
    CaseItem,
    CaseNote,
    TimelinePoint,
    VerdictItem,
    VerdictResult,
)
from api.tables import AlertRecord, CaseNoteRecord, DecisionRecord
from detector.contracts import Decision

CaseStatusFilter = Literal["open", "decided", "all"]
CASE_STATUS_FILTERS: tuple[str, ...] = get_args(CaseStatusFilter)
_DECISIONS: Table = DecisionRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class CaseFilter:
    """What ``list_cases`` returns: cases of ``status`` (``open`` while any alert is open
    or claimed, ``decided``, ``all``) containing ``q`` (an exact card, terminal or
    transaction id of an alert or of a decision of the case), one page."""

    status: str = "open"
    q: str | None = None
    limit: int = 50
    offset: int = 0


# --- Decisions in ---------------------------------------------------------------------


def check_decision(decision: Decision) -> None:
    """Refuse a decision the database cannot hold (``Invalid``: skip it, never retry)."""
    for what, value in (
        ("transaction_id", decision.transaction_id),
        ("card_id", decision.card_id),
        ("terminal_id", decision.terminal_id),
        ("model_name", decision.model_name),
    ):
        storable_text(what, value, NAME_MAX)
    if not math.isfinite(decision.amount):
        raise Invalid("amount must be a finite number")


def ingest_decisions(ctx: Context, *, decisions: Sequence[Decision]) -> int:
    """Store ``decisions`` (each passed ``check_decision``) in one statement and one
    transaction; one whose transaction is stored already is kept as it was. Returns the
    rows added."""
    now = ctx.now()
    rows: dict[str, dict[str, object]] = {}
    for decision in decisions:
        rows.setdefault(
            decision.transaction_id,
            {
                "transaction_id": decision.transaction_id,
                "card_id": decision.card_id,
                "terminal_id": decision.terminal_id,
                "amount": decision.amount,
                "transaction_time": decision.transaction_time,
                "score": decision.score,
                "decision": decision.decision,
                "model_name": decision.model_name,
                "stored_at": now,
            },
        )
    if not rows:
        return 0
    session = ctx.session
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(_DECISIONS)
        .values(list(rows.values()))
        .on_conflict_do_nothing(index_elements=["transaction_id"])
        .returning(_DECISIONS.c.transaction_id)
    )
    added = transact(session, "decisions", lambda: session.execute(statement).all())
    return len(added)


def purge_decisions(ctx: Context, *, before: datetime) -> int:
    """Drop the decisions stored before ``before``; returns how many went."""
    session = ctx.session
    statement = delete(_DECISIONS).where(_DECISIONS.c.stored_at < utc(before))
    result = transact(session, "decisions", lambda: session.execute(statement))
    return int(getattr(result, "rowcount", 0) or 0)


# --- Cases ----------------------------------------------------------------------------


def _aware(value: Any) -> datetime | None:
    """A datetime from an aggregate (on SQLite, ``min``/``max`` may hand back text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)


def _window_start(newest: ColumnElement[Any], window: timedelta, dialect: str) -> Any:
    """The SQL for ``newest - window``."""
    if dialect == "sqlite":
        # SQLite keeps UTC text of one fixed format, whose order is time order; %f gives
        # milliseconds, which is as close as a window needs to be.
        return func.strftime("%Y-%m-%d %H:%M:%f", newest, f"-{window.total_seconds():.3f} seconds")
    return newest - literal(window, Interval())


def _validated(filters: CaseFilter) -> CaseFilter:
    if filters.status not in CASE_STATUS_FILTERS:
        raise Invalid(
            f"status must be one of {', '.join(CASE_STATUS_FILTERS)}, not {filters.status!r}"
        )
    if filters.q is not None and ("\x00" in filters.q or not filters.q.strip()):
        raise Invalid("q must be a card, terminal or transaction id")
    if not 1 <= filters.limit <= PAGE_MAX:
        raise Invalid(f"limit must be between 1 and {PAGE_MAX}, not {filters.limit}")
    if filters.offset < 0:
        raise Invalid(f"offset must be 0 or more, not {filters.offset}")
    return filters


def _matches(table: Any, q: str) -> ColumnElement[bool]:
    return or_(table.card_id == q, table.terminal_id == q, table.transaction_id == q)


class _Cases:
    """The SQL of cases at one instant: each card's newest alert time, and the figures of
    its alerts in the window, grouped by card."""

    def __init__(
        self, ctx: Context, window: timedelta, *, card_id: str | None = None, q: str | None = None
    ) -> None:
        self.now = ctx.now()
        dialect = ctx.session.get_bind().dialect.name
        latest = select(
            AlertRecord.card_id.label("card_id"),
            func.max(AlertRecord.transaction_time).label("newest"),
        ).group_by(AlertRecord.card_id)
        if card_id is not None:
            latest = latest.where(AlertRecord.card_id == card_id)
        if q is not None:
            # The candidate cards, found through the indexes; the window is checked below.
            candidates = union(
                select(AlertRecord.card_id).where(_matches(AlertRecord, q)),
                select(DecisionRecord.card_id).where(_matches(DecisionRecord, q)),
            ).subquery()
            latest = latest.where(AlertRecord.card_id.in_(select(candidates.c.card_id)))
        self.latest: Subquery = latest.subquery("latest")
        self.start = _window_start(self.latest.c.newest, window, dialect)
        self.q = q

    def in_case(self) -> ColumnElement[bool]:
        return and_(
            AlertRecord.card_id == self.latest.c.card_id,
            AlertRecord.transaction_time >= self.start,
        )

    def figures(self, status: str = "all") -> Any:
        """One row per case: its figures, the newest alert time, filtered by ``status``."""
        is_open = AlertRecord.status != "decided"
        live = and_(AlertRecord.status == "claimed", AlertRecord.claim_expires_at > self.now)
        open_alerts = func.sum(case((is_open, 1), else_=0))
        oldest_open = func.min(case((is_open, AlertRecord.created_at), else_=None))
        query = (
            select(
                AlertRecord.card_id.label("card_id"),
                self.latest.c.newest.label("newest"),
                func.count().label("alerts"),
                open_alerts.label("open_alerts"),
                func.max(AlertRecord.score).label("max_score"),
                func.max(case((AlertRecord.decision == "block", 1), else_=0)).label("blocks"),
                func.sum(case((is_open, AlertRecord.amount), else_=0.0)).label("at_risk"),
                func.min(AlertRecord.currency).label("currency_min"),
                func.max(AlertRecord.currency).label("currency_max"),
                func.count(AlertRecord.currency).label("currencies"),
                func.min(AlertRecord.created_at).label("first_alert_at"),
                func.max(AlertRecord.created_at).label("last_alert_at"),
                oldest_open.label("oldest_open_at"),
                func.max(case((live, AlertRecord.claimed_by), else_=None)).label("claimed_by"),
            )
            .select_from(AlertRecord)
            .join(self.latest, self.in_case())
            .group_by(AlertRecord.card_id, self.latest.c.newest)
        )
        if status == "open":
            query = query.having(open_alerts > 0)
        elif status == "decided":
            query = query.having(open_alerts == 0)
        if self.q is not None:
            q = self.q
            in_window = and_(
                DecisionRecord.card_id == AlertRecord.card_id,
                DecisionRecord.transaction_time >= self.start,
                DecisionRecord.transaction_time <= self.latest.c.newest,
                _matches(DecisionRecord, q),
            )
            query = query.having(
                or_(
                    func.max(case((_matches(AlertRecord, q), 1), else_=0)) == 1,
                    exists(select(DecisionRecord.transaction_id).where(in_window)),
                )
            )
        return query

    def top_reasons(self, ctx: Context, cards: Sequence[str]) -> dict[str, str | None]:
        """The first reason of each case's highest-scored alert (the newest if tied)."""
        if not cards:
            return {}
        rank = (
            func.row_number()
            .over(
                partition_by=AlertRecord.card_id,
                order_by=(
                    AlertRecord.score.desc(),
                    AlertRecord.created_at.desc(),
                    AlertRecord.alert_id.asc(),
                ),
            )
            .label("rank")
        )
        ranked = (
            select(AlertRecord.card_id, AlertRecord.reasons, rank)
            .join(self.latest, self.in_case())
            .where(AlertRecord.card_id.in_(list(cards)))
            .subquery()
        )
        rows = ctx.session.execute(
            select(ranked.c.card_id, ranked.c.reasons).where(ranked.c.rank == 1)
        )
        return {card: (reasons[0] if reasons else None) for card, reasons in rows}

    def item(self, row: Row[Any], top_reason: str | None) -> dict[str, Any]:
        """The fields of a ``CaseItem`` from a row of ``figures``."""
        oldest_open = _aware(row.oldest_open_at)
        same_currency = row.currencies == row.alerts and row.currency_min == row.currency_max
        return {
            "card_id": row.card_id,
            "alerts": int(row.alerts),
            "open_alerts": int(row.open_alerts or 0),
            "max_score": float(row.max_score),
            "decision": "block" if row.blocks else "review",
            "top_reason": top_reason,
            "amount_at_risk": float(row.at_risk or 0.0),
            "currency": row.currency_min if same_currency else None,
            "first_alert_at": _aware(row.first_alert_at),
            "last_alert_at": _aware(row.last_alert_at),
            "oldest_open_at": oldest_open,
            "age_seconds": (
                max(0.0, (self.now - oldest_open).total_seconds()) if oldest_open else None
            ),
            "status": "open" if row.open_alerts else "decided",
            "claimed_by": row.claimed_by,
        }


def list_cases(
    ctx: Context, *, filters: CaseFilter, window: timedelta
) -> tuple[list[CaseItem], int]:
    """One page of cases and the number of all cases matching ``filters``.

    Order: highest score first; equal scores, the case whose oldest open alert is oldest
    first (it has waited longest; cases with nothing open after those); then card id.
    """
    filters = _validated(filters)
    q = filters.q.strip() if filters.q is not None else None
    cases = _Cases(ctx, window, q=q)
    figures = cases.figures(filters.status).subquery("figures")
    total = ctx.session.scalar(select(func.count()).select_from(figures))
    query = (
        select(figures)
        .order_by(
            figures.c.max_score.desc(),
            case((figures.c.oldest_open_at.is_(None), 1), else_=0),
            figures.c.oldest_open_at.asc(),
            figures.c.card_id.asc(),
        )
        .limit(filters.limit)
        .offset(filters.offset)
    )
    rows = list(ctx.session.execute(query))
    reasons = cases.top_reasons(ctx, [row.card_id for row in rows])
    items = [CaseItem(**cases.item(row, reasons.get(row.card_id))) for row in rows]
    return items, int(total or 0)


def _newest(ctx: Context, card_id: str) -> datetime:
    """The transaction time of the card's newest alert, or ``NotFound``."""
    if "\x00" in card_id:
        raise NotFound(f"card {card_id!r} has no alert")
    newest = _aware(
        ctx.session.scalar(
            select(func.max(AlertRecord.transaction_time)).where(AlertRecord.card_id == card_id)
        )
    )
    if newest is None:
        raise NotFound(f"card {card_id} has no alert")
    return newest


def _case_alerts(ctx: Context, card_id: str, window: timedelta) -> list[AlertRecord]:
    """The case's alert rows, newest first, or ``NotFound`` when the card has no alert."""
    newest = _newest(ctx, card_id)
    query = (
        select(AlertRecord)
        .where(AlertRecord.card_id == card_id, AlertRecord.transaction_time >= newest - window)
        .order_by(AlertRecord.created_at.desc(), AlertRecord.alert_id.asc())
        .execution_options(populate_existing=True)
    )
    return list(ctx.session.scalars(query))


def _timeline(
    ctx: Context, card_id: str, alerts: Sequence[AlertItem], window: timedelta
) -> list[TimelinePoint]:
    """The card's decisions in the window, oldest first, each with its alert if it has
    one; alerts without a stored decision are points too."""
    newest = max(alert.transaction_time for alert in alerts)
    by_transaction = {alert.transaction_id: alert for alert in alerts}
    query = (
        select(DecisionRecord)
        .where(
            DecisionRecord.card_id == card_id,
            DecisionRecord.transaction_time >= newest - window,
            DecisionRecord.transaction_time <= newest,
        )
        .order_by(DecisionRecord.transaction_time.asc(), DecisionRecord.transaction_id.asc())
    )
    points: list[TimelinePoint] = []
    for record in ctx.session.scalars(query):
        alert = by_transaction.pop(record.transaction_id, None)
        points.append(
            TimelinePoint(
                transaction_id=record.transaction_id,
                transaction_time=record.transaction_time,
                amount=record.amount,
                terminal_id=record.terminal_id,
                score=record.score,
                decision=record.decision,  # the table's CHECK
                alert_id=alert.alert_id if alert else None,
                status=alert.status if alert else None,
                label=alert.label if alert else None,
            )
        )
    for alert in by_transaction.values():
        points.append(
            TimelinePoint(
                transaction_id=alert.transaction_id,
                transaction_time=alert.transaction_time,
                amount=alert.amount,
                terminal_id=alert.terminal_id,
                score=alert.score,
                decision=alert.decision,
                alert_id=alert.alert_id,
                status=alert.status,
                label=alert.label,
            )
        )
    points.sort(key=lambda point: (point.transaction_time, point.transaction_id))
    return points


def get_case(ctx: Context, *, card_id: str, window: timedelta) -> CaseDetail:
    """The case of ``card_id`` with its alerts (newest first), the card's decisions in
    the window and its notes (oldest first); ``NotFound`` when the card has no alert."""
    records = _case_alerts(ctx, card_id, window)
    cases = _Cases(ctx, window, card_id=card_id)
    row = ctx.session.execute(cases.figures()).one()
    figures = cases.item(row, cases.top_reasons(ctx, [card_id]).get(card_id))
    del figures["alerts"]
    alerts = [item(record, cases.now) for record in records]
    return CaseDetail(
        **figures,
        window_hours=window.total_seconds() / 3600,
        alerts=alerts,
        timeline=_timeline(ctx, card_id, alerts, window),
        notes=notes(ctx, card_id=card_id),
    )


def decide_case(
    ctx: Context,
    *,
    card_id: str,
    window: timedelta,
    actor: str,
    label: str,
    note: str | None = None,
    alert_ids: Sequence[str] | None = None,
) -> list[VerdictResult]:
    """One verdict for every open alert of the case, or for ``alert_ids`` (each must be
    an alert of the case: else ``Invalid``, and nothing is decided). Each alert is decided
    as by the batch verdict: alone, by the same claim rules, with its audit event and
    label. A case with nothing open gives no results."""
    records = _case_alerts(ctx, card_id, window)
    ctx.session.commit()  # end the read: each verdict is its own transaction
    if alert_ids is None:
        chosen = [record.alert_id for record in reversed(records) if record.status != "decided"]
    else:
        chosen = list(dict.fromkeys(alert_ids))
        known = {record.alert_id for record in records}
        foreign = [alert_id for alert_id in chosen if alert_id not in known]
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise Invalid(
                f"{len(foreign)} alert(s) not in the case of card {card_id}: {shown}"[:500]
            )
    verdicts = [VerdictItem(alert_id=alert_id, label=label, note=note) for alert_id in chosen]
    return decide_many(ctx, items=verdicts, actor=actor)


# --- Notes ----------------------------------------------------------------------------


def notes(ctx: Context, *, card_id: str) -> list[CaseNote]:
    """The notes on the card's case, oldest first."""
    query = (
        select(CaseNoteRecord)
        .where(CaseNoteRecord.card_id == card_id)
        .order_by(CaseNoteRecord.note_id.asc())
    )
    return [CaseNote.model_validate(record) for record in ctx.session.scalars(query)]


def add_note(ctx: Context, *, card_id: str, actor: str, text: str) -> CaseNote:
    """Add ``actor``'s note to the case of ``card_id`` (``NotFound`` if the card has no
    alert); notes keep their author and time and are never changed."""
    check_actor(actor)
    if not text.strip():
        raise Invalid("a note must not be blank")
    storable_text("text", text, NOTE_MAX)
    _newest(ctx, card_id)
    record = CaseNoteRecord(card_id=card_id, author=actor, text=text, created_at=ctx.now())

    def write() -> CaseNote:
        ctx.session.add(record)
        ctx.session.flush()
        return CaseNote.model_validate(record)

    return transact(ctx.session, card_id, write)
