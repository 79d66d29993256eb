"""Synchronous scoring: ``POST /api/score``, a transaction in, its decision out.

For payment systems (keys of role ``scorer``), analysts and admins; viewers may not. The
body is a ``Transaction`` exactly as on the ``transactions`` topic: one the detector would
dead-letter is refused here with a 422 in the same words, and never published.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyHeader

from api.auth import API_KEY_HEADER, Principal, identify, keyring_of, may_score
from api.metrics import ApiMetrics
from api.routes.common import errors
from api.schemas import ErrorOut
from api.score import RequestTooLarge, ScoreConflict, Scorer, fallback_decision
from detector.contracts import Decision, Transaction
from detector.settings import Settings
from detector.validation import parse_event

_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key: role viewer, analyst or admin; scorer keys may only score.",
)


def require_scoring(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    """The caller's principal, if their key may score (scorer, analyst or admin)."""
    principal = identify(keyring_of(request), key)
    if not may_score(principal.role):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"scoring needs the scorer, analyst or admin role; {principal.name} is "
            f"{principal.role.name}",
        )
    return principal


Scoring = Annotated[Principal, Depends(require_scoring)]

router = APIRouter(prefix="/api", tags=["scoring"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": Transaction.model_json_schema()}},
    }
}


@router.post(
    "/score",
    summary="Decide a transaction now",
    response_class=Response,
    responses={
        200: {"model": Decision, "description": "The transaction's decision."},
        **errors(401, 403, 422),
        409: {
            "model": ErrorOut,
            "description": "The transaction was decided before from the transactions topic, "
            "or scored before with another terminal, amount or time.",
        },
    },
    openapi_extra=_BODY,
)
async def score(request: Request, _principal: Scoring) -> Response:
    """The transaction's decision by the running detector, within ``score_timeout_ms``.

    The answer is the ``Decision`` published on ``decisions``. Without an answer in time,
    the fallback (``score_fallback``), with ``degraded: true``, model ``fallback`` and a
    score of 0 that means nothing; the detector still decides the transaction. The same
    transaction again gets the same decision. An API run without Kafka answers the
    fallback at once.
    """
    settings: Settings = request.app.state.settings
    parsed = parse_event(
        await request.body(),
        Transaction,
        max_bytes=settings.detector.max_message_bytes,
        max_clock_skew=timedelta(seconds=settings.detector.max_clock_skew_seconds),
    )
    if isinstance(parsed, tuple):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid transaction: {parsed[1]}"
        )
    assert isinstance(parsed, Transaction)
    metrics: ApiMetrics = request.app.state.metrics
    scorer: Scorer | None = request.app.state.scorer
    if scorer is None:  # an API run without Kafka: like a broker that is down
        fallback = fallback_decision(
            parsed, settings.api.score_fallback, settings.api.score_timeout_ms, datetime.now(UTC)
        )
        metrics.scored("unpublished", 0.0)
        return Response(fallback.model_dump_json(), media_type="application/json")
    started = time.perf_counter()
    try:
        answer = await scorer.score(parsed)
    except ScoreConflict as conflict:
        metrics.scored("conflict", time.perf_counter() - started)
        raise HTTPException(status.HTTP_409_CONFLICT, str(conflict)) from None
    except RequestTooLarge as too_large:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(too_large)) from None
    metrics.scored(answer.outcome, time.perf_counter() - started)
    return Response(answer.decision.model_dump_json(), media_type="application/json")
