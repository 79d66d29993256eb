"""Exploration alerts, label origins and reported frauds through the HTTP API, on SQLite
and PostgreSQL: the mark is stored and never shown, a verdict's label says its origin,
and an analyst reports a fraud the detector let through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.tables import AlertRecord
from detector.contracts import Label
from tests.factories import model_status
from tests.unit.test_api import ANALYST, ANALYST2, VIEWER, as_, ingest, make_alert, outbox
from tests.unit.test_cases import detail, make_decision, store


def labels(app: FastAPI) -> list[Label]:
    return [Label.model_validate_json(row.value) for row in outbox(app) if row.topic == "labels"]


def report(
    client: TestClient, tx_id: str, key: str = ANALYST, **body: Any
) -> tuple[int, dict[str, Any]]:
    response = client.post(f"/api/transactions/{tx_id}/fraud", json=body, headers=as_(key))
    return response.status_code, response.json()


# --- Exploration alerts ---------------------------------------------------------------------


def test_an_exploration_alert_is_stored_marked_and_shown_as_any_other(
    app: FastAPI, client: TestClient
) -> None:
    explored = make_alert(1, score=0.02).model_copy(update={"exploration": True})
    ingest(app, explored, make_alert(2))
    with app.state.sessions() as session:
        marks = {r.transaction_id: r.exploration for r in session.query(AlertRecord)}
    assert marks == {"tx-1": True, "tx-2": False}
    # the analyst judges it blind: nothing in what the API shows says it
    listed = client.get("/api/alerts", headers=as_(VIEWER)).json()["items"]
    one = client.get(f"/api/alerts/{explored.alert_id}", headers=as_(VIEWER)).json()
    assert "exploration" not in json.dumps(listed) + json.dumps(one)
    assert {item["decision"] for item in listed} == {"review"}


def test_a_verdict_says_the_origin_of_its_alert(app: FastAPI, client: TestClient) -> None:
    explored = make_alert(1, score=0.02).model_copy(update={"exploration": True})
    alerted = make_alert(2)
    ingest(app, explored, alerted)
    for alert in (explored, alerted):
        response = client.post(
            f"/api/alerts/{alert.alert_id}/verdict", json={"label": "legit"}, headers=as_(ANALYST)
        )
        assert response.status_code == 200, response.text
    origins = {label.transaction_id: (label.origin, label.source) for label in labels(app)}
    assert origins == {"tx-1": ("exploration", "analyst"), "tx-2": ("alerted", "analyst")}


def test_models_show_the_figures_of_the_sample_apart(app: FastAPI, client: TestClient) -> None:
    quality = {
        "by_origin": {
            "alerted": {
                "labels": 40,
                "frauds": 30,
                "alerts": 40,
                "auc": None,
                "alert_precision": 0.75,
            },
            "exploration": {
                "labels": 120,
                "frauds": 1,
                "alerts": 0,
                "auc": None,
                "alert_precision": None,
            },
        },
        "min_exploration": 100,
        "exploration_share": 0.002,
        "allowed_fraud_rate": 1 / 120,
        "estimated_recall": 0.42,
    }
    ingest(app, statuses=(model_status(quality=quality),))
    [info] = client.get("/api/models", headers=as_(VIEWER)).json()
    got = info["status"]["quality"]
    assert got["by_origin"]["exploration"]["labels"] == 120
    assert (got["allowed_fraud_rate"], got["estimated_recall"]) == (1 / 120, 0.42)


# --- Reporting a missed fraud -----------------------------------------------------------------


def test_an_analyst_reports_an_allowed_transaction_as_fraud(
    app: FastAPI, client: TestClient
) -> None:
    ingest(app, make_alert(1))
    assert store(app, make_decision(1, decision="review"), make_decision(2), make_decision(3))
    status, body = report(client, "tx-2", card_id="card-1", note="customer called: not me")
    assert status == 201, body
    assert body | {"reported_at": None} == {
        "transaction_id": "tx-2",
        "card_id": "card-1",
        "decision": "allow",
        "label": "fraud",
        "origin": "reported",
        "reported_by": "ann",
        "reported_at": None,
        "note_id": body["note_id"],
    }
    [label] = labels(app)
    assert (label.transaction_id, label.card_id, label.label) == ("tx-2", "card-1", "fraud")
    assert (label.source, label.origin) == ("analyst", "reported")
    [row] = [row for row in outbox(app) if row.topic == "labels"]
    assert row.key == "card-1"
    # the case's notes keep who reported it, when and why
    [note] = detail(client, "card-1")["notes"]
    assert note["author"] == "ann"
    assert note["text"] == "Reported transaction tx-2 (allow) as fraud: customer called: not me"
    assert note["note_id"] == body["note_id"]


def test_a_second_report_is_a_conflict_and_queues_nothing(app: FastAPI, client: TestClient) -> None:
    store(app, make_decision(2))
    assert report(client, "tx-2", card_id="card-1")[0] == 201
    status, body = report(client, "tx-2", ANALYST2, card_id="card-1", note="again")
    assert status == 409
    assert "reported as fraud already" in body["detail"]
    assert len(labels(app)) == 1


def test_a_transaction_with_an_alert_is_decided_through_it(
    app: FastAPI, client: TestClient
) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    store(app, make_decision(1, decision="review"))
    status, body = report(client, "tx-1", card_id="card-1")
    assert status == 409
    assert (
        body["detail"] == f"transaction tx-1 has alert {alert.alert_id}: decide the alert instead"
    )
    assert labels(app) == []


@pytest.mark.parametrize(
    ("tx_id", "card"),
    [("tx-9", "card-1"), ("tx-2", "card-2"), ("tx-2'; DROP TABLE outbox;--", "card-1")],
)
def test_an_unknown_transaction_is_404(
    app: FastAPI, client: TestClient, tx_id: str, card: str
) -> None:
    store(app, make_decision(2))
    status, body = report(client, tx_id, card_id=card)
    assert status == 404
    assert body["detail"] == f"no decision of transaction {tx_id} of card {card} is kept"
    assert labels(app) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"card_id": ""},
        {"card_id": "card-1", "note": "x" * 2001},
        {"card_id": "card-1", "note": "nul \x00"},
        {"card_id": "card-1", "label": "legit"},
        {"card_id": 7},
    ],
)
def test_bad_reports_are_422(app: FastAPI, client: TestClient, body: dict[str, Any]) -> None:
    store(app, make_decision(2))
    status, _ = report(client, "tx-2", **body)
    assert status == 422
    assert labels(app) == []


def test_only_analysts_report(app: FastAPI, client: TestClient) -> None:
    store(app, make_decision(2))
    assert report(client, "tx-2", VIEWER, card_id="card-1")[0] == 403
    response = client.post("/api/transactions/tx-2/fraud", json={"card_id": "card-1"})
    assert response.status_code == 401
    assert labels(app) == []
