"""Cases against a real broker: decisions and alerts in from their topics, the case's
timeline read back through the API, and one case verdict out as labels."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from detector.contracts import Label
from detector.settings import Settings
from tests.integration.kafka_io import produce
from tests.integration.test_api_kafka import ANALYST, read_all, review_settings, wait_for
from tests.unit.test_api import T0, make_alert
from tests.unit.test_cases import decision_of, make_decision

pytestmark = pytest.mark.integration
HEADERS = {"X-API-Key": ANALYST}


@pytest.fixture
def served(unique_topics: Settings, tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(review_settings(unique_topics, tmp_path))
    with TestClient(app) as client:
        yield app, client


def timeline(client: TestClient, card: str) -> list[dict[str, object]]:
    response = client.get(f"/api/cases/{card}", headers=HEADERS)
    if response.status_code != 200:
        return []
    points: list[dict[str, object]] = response.json()["timeline"]
    return points


def test_a_cases_timeline_and_verdict_through_kafka(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    settings: Settings = app.state.settings
    card = "card-case"
    first = make_alert(1, card=card, amount=950.0, score=0.93, decision="block", at=T0)
    second = make_alert(2, card=card, amount=420.0, score=0.71, at=T0 - timedelta(hours=3))
    other = make_alert(3, card="card-other", at=T0)
    quiet = [
        make_decision(10 + n, card=card, amount=12.5 + n, at=T0 - timedelta(hours=20 - n))
        for n in range(4)
    ]
    decisions = [*quiet, decision_of(first), decision_of(second), decision_of(other)]
    produce(
        settings,
        settings.kafka.topic_decisions,
        [(d.card_id, d.model_dump_json().encode()) for d in decisions]
        + [(card, quiet[0].model_dump_json().encode()), (card, b"not a decision")],
    )
    produce(
        settings,
        settings.kafka.topic_alerts,
        [(a.transaction.card_id, a.model_dump_json().encode()) for a in (first, second, other)],
    )

    points = wait_for(
        "the whole timeline", lambda: len(timeline(client, card)) == 6 and timeline(client, card)
    )
    assert [p["transaction_id"] for p in points] == [
        "tx-10",
        "tx-11",
        "tx-12",
        "tx-13",
        "tx-2",
        "tx-1",
    ]
    assert [p["decision"] for p in points] == ["allow"] * 4 + ["review", "block"]
    assert [p["alert_id"] for p in points][-2:] == [second.alert_id, first.alert_id]
    assert all(p["alert_id"] is None for p in points[:4])

    listed = client.get("/api/cases", params={"q": "tx-11"}, headers=HEADERS).json()
    assert [(c["card_id"], c["alerts"], c["amount_at_risk"]) for c in listed["items"]] == [
        (card, 2, 1370.0)
    ]

    response = client.post(
        f"/api/cases/{card}/verdicts",
        json={"label": "fraud", "note": "card testing, then large amounts"},
        headers=HEADERS,
    )
    assert response.status_code == 200, response.text
    assert [r["ok"] for r in response.json()["results"]] == [True, True]

    topic = settings.kafka.topic_labels
    records = wait_for(
        "two labels", lambda: len(read_all(settings, topic)) == 2 and read_all(settings, topic)
    )
    labels = sorted(
        ((key, Label.model_validate_json(value)) for key, value in records),
        key=lambda pair: pair[1].transaction_id,
    )
    assert [(key, label.transaction_id, label.label, label.source) for key, label in labels] == [
        (card.encode(), "tx-1", "fraud", "analyst"),
        (card.encode(), "tx-2", "fraud", "analyst"),
    ]
    decided = timeline(client, card)
    assert [(p["status"], p["label"]) for p in decided[-2:]] == [("decided", "fraud")] * 2
    assert client.get("/api/cases", headers=HEADERS).json()["items"][0]["card_id"] == "card-other"
