"""The review side's copy of each model's status, on a real SQLite file and a real
PostgreSQL database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from api import review
from api.review import Invalid, NotFound
from detector.contracts import ModelStatus
from tests.factories import model_status
from tests.unit.review_support import T0, ctx


def status(name: str, emitted_at: datetime, *, deciding: bool = True) -> ModelStatus:
    return model_status(
        name,
        model_version="1",
        deciding=deciding,
        transactions_scored=10,
        decisions={"allow": 9, "review": 1},
        labels_learned={"fraud": 0, "legit": 1},
        labels_by_source={"analyst": 1},
        classifier_weight=0.5,
        quality={"window": 1, "frauds": 0},
        emitted_at=emitted_at,
    )


def test_status_is_upserted_by_model_and_late_snapshots_are_ignored(session: Session) -> None:
    review.ingest_status(ctx(session, T0), status=status("logreg", T0))
    review.ingest_status(ctx(session, T0), status=status("tree", T0, deciding=False))
    review.ingest_status(ctx(session, T0), status=status("logreg", T0 + timedelta(seconds=5)))
    review.ingest_status(ctx(session, T0), status=status("logreg", T0 - timedelta(seconds=5)))
    rows = review.model_statuses(ctx(session))
    assert [row.status.model_name for row in rows] == ["logreg", "tree"]
    assert rows[0].status.emitted_at == T0 + timedelta(seconds=5)
    assert rows[0].status == status("logreg", T0 + timedelta(seconds=5))
    assert not review.get_model_status(ctx(session), model_name="tree").status.deciding
    with pytest.raises(NotFound, match="forest"):
        review.get_model_status(ctx(session), model_name="forest")


def test_statuses_no_database_could_hold_are_invalid(session: Session) -> None:
    with pytest.raises(Invalid, match="model_name"):
        review.ingest_status(ctx(session, T0), status=status("m" * 129, T0))
    nan = status("logreg", T0).model_copy(update={"classifier_weight": float("nan")})
    with pytest.raises(Invalid, match="NaN"):
        review.ingest_status(ctx(session, T0), status=nan)
    assert review.model_statuses(ctx(session)) == []
