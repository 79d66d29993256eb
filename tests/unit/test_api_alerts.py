"""The review service's alert routes: listing, detail, claims, verdicts, batches, stats."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from detector.contracts import Label
from tests.unit.test_api import (
    ADMIN,
    ANALYST,
    ANALYST2,
    T0,
    VIEWER,
    as_,
    ingest,
    make_alert,
    outbox,
)


def test_list_filter_sort_and_page(app: FastAPI, client: TestClient) -> None:
    ingest(
        app,
        make_alert(1, score=0.7, amount=50, card="c-a"),
        make_alert(2, score=0.95, amount=5, card="c-b", decision="block"),
        make_alert(3, score=0.6, amount=500, card="c-a", terminal="t-9"),
    )
    page = client.get("/api/alerts", headers=as_(VIEWER)).json()
    assert page["total"] == 3
    assert [i["score"] for i in page["items"]] == [0.95, 0.7, 0.6]

    by_amount = client.get("/api/alerts", params={"sort": "-amount"}, headers=as_(VIEWER))
    assert [i["amount"] for i in by_amount.json()["items"]] == [500, 50, 5]

    filtered = client.get(
        "/api/alerts",
        params={"card_id": "c-a", "min_score": 0.65, "status": "open", "decision": "review"},
        headers=as_(VIEWER),
    ).json()
    assert [i["transaction_id"] for i in filtered["items"]] == ["tx-1"]

    paged = client.get("/api/alerts", params={"limit": 1, "offset": 1}, headers=as_(VIEWER))
    assert paged.json()["total"] == 3 and len(paged.json()["items"]) == 1

    window = client.get(
        "/api/alerts",
        params={"since": (T0 + timedelta(seconds=2)).isoformat(), "until": "2030-01-01T00:00"},
        headers=as_(VIEWER),
    ).json()
    assert {i["transaction_id"] for i in window["items"]} == {"tx-2", "tx-3"}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sort": "price"}, "sort"),
        ({"card_id": "x" * 129}, "at most 128"),
        ({"terminal_id": "t\x00"}, "control characters"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"min_score": 2}, "min_score"),
        ({"min_score": "nan"}, "min_score"),
        ({"min_score": 0.9, "max_score": 0.1}, "min_score"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since"),
        ({"status": "lost"}, "status"),
        ({"label": "maybe"}, "label"),
    ],
)
def test_bad_filters_are_a_clear_422(
    client: TestClient, params: dict[str, Any], fragment: str
) -> None:
    response = client.get("/api/alerts", params=params, headers=as_(VIEWER))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail


def test_detail_has_transaction_card_context_and_history(app: FastAPI, client: TestClient) -> None:
    first, second, other = make_alert(1), make_alert(2), make_alert(3, card="c-other")
    ingest(app, first, second, other)
    detail = client.get(f"/api/alerts/{second.alert_id}", headers=as_(VIEWER)).json()
    assert detail["item"]["alert_id"] == second.alert_id
    assert detail["transaction"]["transaction_id"] == "tx-2"
    assert detail["features"]["card_tx_24h"] == 3.0
    assert detail["reasons"] == list(second.reasons)
    assert [a["alert_id"] for a in detail["card_alerts"]] == [first.alert_id]
    assert [e["action"] for e in detail["history"]] == ["received"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/alerts/{id}"),
        ("GET", "/api/alerts/{id}/history"),
        ("POST", "/api/alerts/{id}/claim"),
        ("POST", "/api/alerts/{id}/release"),
        ("POST", "/api/alerts/{id}/reopen"),
    ],
)
def test_unknown_alert_is_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path.format(id="no-such-alert"), headers=as_(ANALYST))
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


def test_overlong_or_nul_alert_id_is_422(client: TestClient) -> None:
    for alert_id in ("x" * 129, "a%00b"):
        response = client.get(f"/api/alerts/{alert_id}", headers=as_(VIEWER))
        assert response.status_code == 422, alert_id


def test_claim_release_and_someone_elses_claim(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    url = f"/api/alerts/{alert.alert_id}"

    claimed = client.post(f"{url}/claim", headers=as_(ANALYST)).json()
    assert claimed["status"] == "claimed" and claimed["claimed_by"] == "ann"

    taken = client.post(f"{url}/claim", headers=as_(ANALYST2))
    assert taken.status_code == 409 and "claimed by ann" in taken.json()["detail"]
    assert (
        client.post(f"{url}/verdict", json={"label": "fraud"}, headers=as_(ANALYST2)).status_code
        == 409
    )
    assert client.post(f"{url}/release", headers=as_(ANALYST2)).status_code == 409

    # The claim expires: then anyone may decide.
    app.state.clock.now += timedelta(seconds=601)
    listed = client.get("/api/alerts", params={"status": "open"}, headers=as_(VIEWER)).json()
    assert listed["total"] == 1
    assert client.post(f"{url}/claim", headers=as_(ANALYST2)).json()["claimed_by"] == "bob"
    # An admin may release anyone's claim.
    released = client.post(f"{url}/release", headers=as_(ADMIN))
    assert released.status_code == 200 and released.json()["status"] == "open"


def test_verdict_writes_one_label_and_is_idempotent(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1, card="card-42")
    ingest(app, alert)
    url = f"/api/alerts/{alert.alert_id}/verdict"

    decided = client.post(url, json={"label": "fraud", "note": "card stolen"}, headers=as_(ANALYST))
    assert decided.status_code == 200
    body = decided.json()
    assert body["status"] == "decided" and body["label"] == "fraud"
    assert body["decided_by"] == "ann" and body["note"] == "card stolen"

    again = client.post(url, json={"label": "fraud"}, headers=as_(ANALYST))
    assert again.status_code == 200
    rows = outbox(app)
    assert len(rows) == 1
    assert rows[0].topic == "labels" and rows[0].key == "card-42"
    label = Label.model_validate_json(rows[0].value)
    assert (label.transaction_id, label.card_id, label.label, label.source) == (
        "tx-1", "card-42", "fraud", "analyst",
    )  # fmt: skip

    conflicting = client.post(url, json={"label": "legit"}, headers=as_(ANALYST2))
    assert conflicting.status_code == 409 and "already decided" in conflicting.json()["detail"]
    assert len(outbox(app)) == 1

    changed = client.post(url, json={"label": "legit", "change": True}, headers=as_(ANALYST2))
    assert changed.status_code == 200 and changed.json()["label"] == "legit"
    assert [Label.model_validate_json(r.value).label for r in outbox(app)] == ["fraud", "legit"]

    actions = [
        e["action"]
        for e in client.get(f"/api/alerts/{alert.alert_id}/history", headers=as_(VIEWER)).json()
    ]
    assert actions == ["received", "decided", "verdict_changed"]


def test_stale_version_is_409(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    url = f"/api/alerts/{alert.alert_id}"
    seen = client.get(url, headers=as_(VIEWER)).json()["item"]["version"]
    client.post(f"{url}/claim", headers=as_(ANALYST))
    stale = client.post(
        f"{url}/verdict", json={"label": "fraud", "version": seen}, headers=as_(ANALYST)
    )
    assert stale.status_code == 409 and "changed meanwhile" in stale.json()["detail"]


def test_reopen_then_new_verdict_is_a_change(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    url = f"/api/alerts/{alert.alert_id}"
    client.post(f"{url}/verdict", json={"label": "fraud"}, headers=as_(ANALYST))
    reopened = client.post(f"{url}/reopen", headers=as_(ANALYST))
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    assert client.post(f"{url}/reopen", headers=as_(ANALYST)).status_code == 409
    client.post(f"{url}/verdict", json={"label": "legit"}, headers=as_(ANALYST))
    assert [Label.model_validate_json(r.value).label for r in outbox(app)] == ["fraud", "legit"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"label": "maybe"}, "label"),
        ({}, "label"),
        ({"label": "fraud", "note": "x" * 2001}, "at most 2000"),
        ({"label": "fraud", "note": "nul\x00"}, "control characters"),
        ({"label": "fraud", "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_malformed_verdict_is_422(
    app: FastAPI, client: TestClient, body: Any, fragment: str
) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    response = client.post(f"/api/alerts/{alert.alert_id}/verdict", json=body, headers=as_(ANALYST))
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    assert outbox(app) == []


def test_invalid_json_is_422(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    response = client.post(
        f"/api/alerts/{alert.alert_id}/verdict",
        content=b'{"label": ',
        headers={**as_(ANALYST), "content-type": "application/json"},
    )
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)


def test_note_of_2000_characters_is_kept(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    note = "é" * 2000
    response = client.post(
        f"/api/alerts/{alert.alert_id}/verdict",
        json={"label": "legit", "note": note},
        headers=as_(ANALYST),
    )
    assert response.status_code == 200 and response.json()["note"] == note


def test_batch_verdicts_succeed_or_fail_each(app: FastAPI, client: TestClient) -> None:
    a, b = make_alert(1), make_alert(2)
    ingest(app, a, b)
    client.post(f"/api/alerts/{b.alert_id}/verdict", json={"label": "legit"}, headers=as_(ANALYST))
    response = client.post(
        "/api/alerts/verdicts",
        json={
            "items": [
                {"alert_id": a.alert_id, "label": "fraud", "note": "batch"},
                {"alert_id": "missing", "label": "fraud"},
                {"alert_id": b.alert_id, "label": "fraud"},
            ]
        },
        headers=as_(ANALYST),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["alert_id"], r["ok"], r["status"]) for r in results] == [
        (a.alert_id, True, 200),
        ("missing", False, 404),
        (b.alert_id, False, 409),
    ]
    assert results[0]["alert"]["label"] == "fraud" and results[1]["detail"]
    assert len(outbox(app)) == 2


def test_batch_limits(client: TestClient) -> None:
    empty = client.post("/api/alerts/verdicts", json={"items": []}, headers=as_(ANALYST))
    assert empty.status_code == 422
    too_many = [{"alert_id": f"a{i}", "label": "fraud"} for i in range(501)]
    big = client.post("/api/alerts/verdicts", json={"items": too_many}, headers=as_(ANALYST))
    assert big.status_code == 422 and "500" in big.json()["detail"]


def test_queue_stats(app: FastAPI, client: TestClient) -> None:
    a, b, c = make_alert(1), make_alert(2), make_alert(3)
    ingest(app, a, b, c)
    client.post(f"/api/alerts/{a.alert_id}/claim", headers=as_(ANALYST))
    client.post(f"/api/alerts/{b.alert_id}/verdict", json={"label": "fraud"}, headers=as_(ANALYST))
    stats = client.get("/api/queue/stats", headers=as_(VIEWER)).json()
    assert (stats["open"], stats["claimed"], stats["decided"]) == (1, 1, 1)
    assert stats["verdicts_last_hour"] == {"fraud": 1, "legit": 0}
    assert stats["outbox_pending"] == 1
    assert stats["oldest_open_age_seconds"] == pytest.approx(3600 - 3)
