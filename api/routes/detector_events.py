"""Attacks and drifts the detector noticed on its own (``detector-events``), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from api import review
from api.deps import ReviewDep
from api.fields import NAME_MAX, OFFSET_MAX, PAGE_MAX
from api.routes.common import api_router
from api.schemas import NO_CONTROL, DetectorEventPage
from detector.contracts import DetectorEventKind

router = api_router("detector-events")


@router.get("/detector-events", summary="List detector events", response_model=DetectorEventPage)
def list_detector_events(
    ctx: ReviewDep,
    kind: Annotated[DetectorEventKind | None, Query(description="One kind of event.")] = None,
    since: Annotated[
        datetime | None,
        Query(description="Detected at or after this time (transaction time; naive is UTC)."),
    ] = None,
    terminal_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NO_CONTROL,
            description="Events about this terminal: its subject, or among the terminals involved.",
        ),
    ] = None,
    card_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NO_CONTROL,
            description="Events naming this card among the cards involved.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> DetectorEventPage:
    """The attacks and drifts the detector noticed, newest first (by ``detected_at``, then
    ``event_id``), one page at a time. An event the detector noticed again (the same
    change, grown since) is listed once, as last seen. ``total`` counts every event
    matching the filters, for paging; events are kept ``DETECTOR_EVENTS_KEEP_DAYS``."""
    filters = review.DetectorEventFilter(
        kind=kind,
        since=since,
        terminal_id=terminal_id,
        card_id=card_id,
        limit=limit,
        offset=offset,
    )
    items, total = review.list_detector_events(ctx, filters=filters)
    return DetectorEventPage(items=items, total=total)
