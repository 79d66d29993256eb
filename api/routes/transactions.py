"""Transactions the detector decided: an analyst reports a fraud it let through."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, status

from api import review
from api.deps import Analyst, ReviewDep
from api.fields import NAME_MAX
from api.routes.common import api_router, errors
from api.schemas import NO_CONTROL, FraudReport, FraudReportIn

router = api_router("transactions")

TransactionIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NO_CONTROL,
        description="The transaction's id, as its decision gives it.",
    ),
]


@router.post(
    "/transactions/{transaction_id}/fraud",
    summary="Report a missed fraud",
    response_model=FraudReport,
    status_code=status.HTTP_201_CREATED,
    responses=errors(404, 409),
)
def report_fraud(
    transaction_id: TransactionIdPath, body: FraudReportIn, principal: Analyst, ctx: ReviewDep
) -> FraudReport:
    """Report a decided transaction (an allowed one, typically) as fraud: its label
    (origin ``reported``) goes to the detector through the outbox, and a note on the
    card's case records who reported it and why.

    404 when no decision of the transaction for that card is kept; 409 when the
    transaction has an alert (decide the alert instead) or was reported already."""
    return review.report_fraud(
        ctx,
        transaction_id=transaction_id,
        card_id=body.card_id,
        actor=principal.name,
        note=body.note,
    )
