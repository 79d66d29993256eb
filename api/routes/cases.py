"""Cases by card: a card's alerts within a window, its decisions, notes and one verdict.

A case is every alert of a card whose transaction time lies within ``case_window_hours``
before the card's newest alert; its id is the card id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Path, Query, status

from api import review
from api.deps import Analyst, ReviewDep, SettingsDep
from api.fields import NAME_MAX, OFFSET_MAX, PAGE_MAX
from api.routes.common import api_router, errors
from api.schemas import (
    NO_CONTROL,
    CaseDetail,
    CaseNote,
    CaseNoteIn,
    CasePage,
    CaseVerdictIn,
    VerdictsOut,
)
from detector.settings import Settings

router = api_router("cases")

CardIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NO_CONTROL,
        description="The card's id: the case's id.",
    ),
]


def _window(settings: Settings) -> timedelta:
    return timedelta(hours=settings.api.case_window_hours)


@router.get("/cases", summary="List cases", response_model=CasePage)
def list_cases(
    ctx: ReviewDep,
    settings: SettingsDep,
    status_: Annotated[
        review.CaseStatusFilter,
        Query(
            alias="status",
            description="open: any alert open or claimed (expired claims included); "
            "decided: every alert decided; all.",
        ),
    ] = "open",
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NO_CONTROL,
            description="An exact card, terminal or transaction id (of an alert or of a "
            "decision of the case): the cases containing it.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> CasePage:
    """Cases, one page at a time: each card's alerts whose transaction time lies within
    ``CASE_WINDOW_HOURS`` before its newest alert, with their figures.

    Order: the highest ``max_score`` first; equal scores, the case whose oldest open
    alert is oldest first (it has waited longest; cases with nothing open after those);
    then ``card_id``. ``total`` counts every case matching the filters, for paging.
    """
    filters = review.CaseFilter(status=status_, q=q, limit=limit, offset=offset)
    items, total = review.list_cases(ctx, filters=filters, window=_window(settings))
    return CasePage(items=items, total=total)


@router.get(
    "/cases/{card_id}", summary="One case", response_model=CaseDetail, responses=errors(404)
)
def get_case(card_id: CardIdPath, ctx: ReviewDep, settings: SettingsDep) -> CaseDetail:
    """The case's figures, its alerts (newest first), every decision of the card in the
    window (oldest first; an alert without a stored decision is a point too) and the
    notes (oldest first). 404 when the card has no alert."""
    return review.get_case(ctx, card_id=card_id, window=_window(settings))


@router.post(
    "/cases/{card_id}/verdicts",
    summary="Decide a case",
    response_model=VerdictsOut,
    responses=errors(404),
)
def decide_case(
    card_id: CardIdPath,
    body: CaseVerdictIn,
    principal: Analyst,
    ctx: ReviewDep,
    settings: SettingsDep,
) -> VerdictsOut:
    """One verdict for every open alert of the case, or for ``alert_ids`` only (each must
    belong to the case, else 422 and nothing is decided).

    Each alert is decided as by ``POST /api/alerts/verdicts``: alone (see each result's
    ``status``: 409 when another analyst holds its claim), audited, and its label sent to
    the detector. A case with nothing open gives no results."""
    results = review.decide_case(
        ctx,
        card_id=card_id,
        window=_window(settings),
        actor=principal.name,
        label=body.label,
        note=body.note,
        alert_ids=body.alert_ids,
    )
    return VerdictsOut(results=results)


@router.post(
    "/cases/{card_id}/notes",
    summary="Add a note to a case",
    response_model=CaseNote,
    status_code=status.HTTP_201_CREATED,
    responses=errors(404),
)
def add_note(card_id: CardIdPath, body: CaseNoteIn, principal: Analyst, ctx: ReviewDep) -> CaseNote:
    """A note on the case, kept with its author and time (notes are never changed).
    404 when the card has no alert."""
    return review.add_note(ctx, card_id=card_id, actor=principal.name, text=body.text)
