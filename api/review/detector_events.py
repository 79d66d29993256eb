"""The detector's events (attacks and drifts) for the review page.

``ingest_detector_event`` stores an event read from ``detector-events``: one seen again
(same ``event_id``: the same change, noticed again or grown since) replaces the stored
one. ``list_detector_events`` reads them newest first (by ``detected_at``), filtered by
kind, time, terminal or card; ``purge_detector_events`` drops those stored before a
cutoff. Events are few (a handful an hour under attack), so the terminal and card
filters read the stored event's lists rather than an index of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from sqlalchemy import ColumnElement, Table, cast, delete, exists, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from api.fields import ALERT_ID_MAX, NAME_MAX, PAGE_MAX
from api.review.errors import Invalid
from api.review.records import Context, storable_text, transact, utc
from api.schemas import DetectorEventItem
from api.tables import DetectorEventRecord
from detector.contracts import DetectorEvent, DetectorEventKind

DETECTOR_EVENT_KINDS: tuple[str, ...] = get_args(DetectorEventKind)
_EVENTS: Table = DetectorEventRecord.__table__  # type: ignore[assignment]
# The contract's longest summary; the column is text.
SUMMARY_MAX = 512
# What may change between two sightings of one event without it being news.
NOT_NEWS = frozenset({"emitted_at"})


@dataclass(frozen=True)
class DetectorEventFilter:
    """What ``list_detector_events`` returns: events of ``kind`` detected at or after
    ``since``, naming ``terminal_id`` or ``card_id`` (as subject or among those
    involved), one page."""

    kind: str | None = None
    since: datetime | None = None
    terminal_id: str | None = None
    card_id: str | None = None
    limit: int = 50
    offset: int = 0


# --- Events in ------------------------------------------------------------------------


def check_detector_event(event: DetectorEvent) -> None:
    """Refuse an event the database cannot hold (``Invalid``: skip it, never retry)."""
    storable_text("event_id", event.event_id, ALERT_ID_MAX)
    if not event.event_id:
        raise Invalid("event_id must not be empty")
    for what, value, longest in (
        ("subject", event.subject, NAME_MAX),
        ("summary", event.summary, SUMMARY_MAX),
        ("unit", event.unit, NAME_MAX),
        ("model_name", event.model_name, NAME_MAX),
        *(("terminals", terminal, NAME_MAX) for terminal in event.terminals),
        *(("cards", card, NAME_MAX) for card in event.cards),
    ):
        storable_text(what, value, longest)
    for what, number in (("before", event.before), ("after", event.after)):
        if number is not None and not math.isfinite(number):
            raise Invalid(f"{what} must be a finite number")
    if not math.isfinite(event.change):
        raise Invalid("change must be a finite number")


def _news(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` tells more than ``old`` (not just a later emission of it)."""
    return {k: v for k, v in old.items() if k not in NOT_NEWS} != {
        k: v for k, v in new.items() if k not in NOT_NEWS
    }


def ingest_detector_event(ctx: Context, *, event: DetectorEvent) -> bool:
    """Store ``event``, replacing the stored one of the same ``event_id``; False (and
    nothing written) when it is stored already with the same content."""
    check_detector_event(event)
    session = ctx.session
    payload = event.model_dump(mode="json")
    stored = session.scalar(
        select(DetectorEventRecord.payload).where(DetectorEventRecord.event_id == event.event_id)
    )
    if stored is not None and not _news(stored, payload):
        session.commit()  # end the read
        return False
    row = {
        "event_id": event.event_id,
        "kind": event.kind,
        "subject": event.subject,
        "summary": event.summary,
        "payload": payload,
        "since": event.since,
        "detected_at": event.detected_at,
        "received_at": ctx.now(),
    }
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_EVENTS).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=["event_id"],
        set_={name: statement.excluded[name] for name in row if name != "event_id"},
    )
    transact(session, event.event_id, lambda: session.execute(statement))
    return True


def purge_detector_events(ctx: Context, *, before: datetime) -> int:
    """Drop the events stored (or last replaced) before ``before``; returns how many went."""
    session = ctx.session
    statement = delete(DetectorEventRecord).where(DetectorEventRecord.received_at < utc(before))
    result = transact(session, "detector_events", lambda: session.execute(statement))
    return int(getattr(result, "rowcount", 0) or 0)


# --- Events out -----------------------------------------------------------------------


def _validated(filters: DetectorEventFilter) -> DetectorEventFilter:
    if filters.kind is not None and filters.kind not in DETECTOR_EVENT_KINDS:
        raise Invalid(
            f"kind must be one of {', '.join(DETECTOR_EVENT_KINDS)}, not {filters.kind!r}"
        )
    for what, value in (("terminal_id", filters.terminal_id), ("card_id", filters.card_id)):
        if value is not None and (not value.strip() or "\x00" in value or len(value) > NAME_MAX):
            raise Invalid(f"{what} must be an id of 1 to {NAME_MAX} characters")
    if filters.since is not None:
        try:
            utc(filters.since)
        except (OverflowError, ValueError):
            raise Invalid("since is out of range") from None
    if not 1 <= filters.limit <= PAGE_MAX:
        raise Invalid(f"limit must be between 1 and {PAGE_MAX}, not {filters.limit}")
    if filters.offset < 0:
        raise Invalid(f"offset must be 0 or more, not {filters.offset}")
    return filters


def _names(ctx: Context, field: str, value: str) -> ColumnElement[bool]:
    """The events whose ``field`` list (``terminals`` or ``cards``) holds ``value``."""
    payload = DetectorEventRecord.payload
    if ctx.session.get_bind().dialect.name == "postgresql":
        return cast(payload, JSONB)[field].contains([value])
    members = func.json_each(payload, f"$.{field}").table_valued("value")
    return exists(select(literal(1)).select_from(members).where(members.c.value == value))


def list_detector_events(
    ctx: Context, *, filters: DetectorEventFilter
) -> tuple[list[DetectorEventItem], int]:
    """One page of events, newest first (by ``detected_at``, then ``event_id``), and the
    number of all events matching ``filters``."""
    filters = _validated(filters)
    conditions: list[ColumnElement[bool]] = []
    if filters.kind is not None:
        conditions.append(DetectorEventRecord.kind == filters.kind)
    if filters.since is not None:
        conditions.append(DetectorEventRecord.detected_at >= utc(filters.since))
    if filters.terminal_id is not None:
        terminal = filters.terminal_id.strip()
        conditions.append(
            (DetectorEventRecord.subject == terminal) | _names(ctx, "terminals", terminal)
        )
    if filters.card_id is not None:
        card = filters.card_id.strip()
        conditions.append((DetectorEventRecord.subject == card) | _names(ctx, "cards", card))
    total = ctx.session.scalar(
        select(func.count()).select_from(DetectorEventRecord).where(*conditions)
    )
    query = (
        select(DetectorEventRecord)
        .where(*conditions)
        .order_by(DetectorEventRecord.detected_at.desc(), DetectorEventRecord.event_id.asc())
        .limit(filters.limit)
        .offset(filters.offset)
    )
    items = [
        DetectorEventItem.model_validate({**record.payload, "received_at": record.received_at})
        for record in ctx.session.scalars(query)
    ]
    return items, int(total or 0)
