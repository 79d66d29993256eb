"""The queue's order for equal scores: the oldest alert first (it has waited longest), then
the alert id; on a real SQLite file and a real PostgreSQL database, and in the API's
OpenAPI description."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.unit.review_support import T0, add, make_alert, page


def test_equal_scores_put_the_longest_waiting_alert_first(session: Session) -> None:
    # Stored newest first, and the alert ids sort against the age: only the alert time
    # can give the expected order.
    alerts = [
        make_alert(n, card=f"card-{9 - n}", score=0.8, at=T0 - timedelta(minutes=n))
        for n in (1, 2, 3)
    ]
    ids = add(session, *alerts)
    assert sorted(ids) != ids[::-1], "the ids must not already sort oldest first"
    top = add(session, make_alert(9, score=0.9, at=T0))[0]
    assert page(session) == [top, ids[2], ids[1], ids[0]]
    # A lower score waits behind a higher one, however old it is.
    old = add(session, make_alert(8, score=0.7, at=T0 - timedelta(days=2)))[0]
    assert page(session) == [top, ids[2], ids[1], ids[0], old]


def test_equal_scores_and_times_are_ordered_by_alert_id(session: Session) -> None:
    ids = add(session, *(make_alert(n, card=f"card-{n}", score=0.8, at=T0) for n in range(6)))
    assert page(session) == sorted(ids)
    assert page(session, sort="score") == sorted(ids)


def test_pages_of_equal_scores_neither_repeat_nor_skip(session: Session) -> None:
    ids = add(
        session,
        *(
            make_alert(n, card=f"card-{n}", score=0.8, at=T0 - timedelta(minutes=n % 3))
            for n in range(9)
        ),
    )
    walked = [alert_id for offset in range(9) for alert_id in page(session, limit=1, offset=offset)]
    assert sorted(walked) == sorted(ids)
    assert walked == page(session, limit=9)


def test_the_order_is_documented_in_the_api(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/alerts"]["get"]
    sort = next(p for p in operation["parameters"] if p["name"] == "sort")
    assert "oldest alert first" in sort["description"]
    assert "oldest first, as it has waited longest" in operation["description"]
