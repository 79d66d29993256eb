"""The review service's HTTP contract, on SQLite and PostgreSQL, without Kafka."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from api import review
from api.main import create_app
from api.tables import OutboxRecord
from detector import __version__
from detector.contracts import (
    Alert,
    Control,
    Label,
    ModelStatus,
    Transaction,
    alert_id_for,
)
from detector.settings import ApiSettings, DetectorSettings, LocalSettings, Settings
from tests.factories import model_status

ADMIN = "admin-key-0123456789abcdef"
ANALYST = "analyst-key-0123456789abcdef"
ANALYST2 = "analyst2-key-0123456789abcdef"
VIEWER = "viewer-key-0123456789abcdef"
KEYS = f"admin:ada:{ADMIN},analyst:ann:{ANALYST},analyst:bob:{ANALYST2},viewer:{VIEWER}"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def as_(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def make_alert(
    n: int,
    *,
    card: str = "card-1",
    terminal: str = "term-1",
    score: float = 0.5,
    amount: float = 10.0,
    decision: str = "review",
    at: datetime = T0,
) -> Alert:
    tx = Transaction(
        transaction_id=f"tx-{n}",
        timestamp=at,
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        currency="EUR",
    )
    return Alert(
        alert_id=alert_id_for(tx.card_id, tx.transaction_id),
        transaction=tx,
        score=score,
        decision=decision,  # type: ignore[arg-type]
        reasons=["amount far above the card's habit"],
        features={"amount": amount, "card_tx_24h": 3.0},
        model_name="hybrid",
        model_version="0.1.0",
        created_at=at + timedelta(seconds=n),
    )


def make_status(name: str, *, deciding: bool, at: datetime = T0) -> ModelStatus:
    return model_status(name, deciding=deciding, emitted_at=at)


class Clock:
    """A settable clock for the app (claims expire by it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        local=LocalSettings(home=tmp_path),
        api=ApiSettings(database_url=database_url, api_keys=SecretStr(KEYS), claim_ttl_seconds=600),
        detector=DetectorSettings(status_interval_seconds=5),
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings, kafka=False)
    app.state.clock = Clock(T0 + timedelta(hours=1))
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def ingest(app: FastAPI, *alerts: Alert, statuses: tuple[ModelStatus, ...] = ()) -> None:
    with app.state.sessions() as session:
        for alert in alerts:
            review.ingest_alert(review.Context(session).at(T0), alert=alert)
        for status in statuses:
            review.ingest_status(review.Context(session, clock=app.state.clock), status=status)


def outbox(app: FastAPI) -> list[OutboxRecord]:
    with app.state.sessions() as session:
        return list(session.scalars(select(OutboxRecord).order_by(OutboxRecord.id)))


# --- open routes ---------------------------------------------------------------------------


def test_health_needs_no_key(tmp_path: Path) -> None:
    with TestClient(
        create_app(Settings(local=LocalSettings(home=tmp_path)), kafka=False)
    ) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_openapi_document_is_served(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "fraudstream"
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all(op.get("summary") and op.get("description") for op in operations)
    api_ops = [
        op for path, item in document["paths"].items() if path.startswith("/api/")
        for op in item.values()
    ]  # fmt: skip
    for op in api_ops:
        assert {"401", "403", "422"} <= set(op["responses"]), op["summary"]
        assert op["security"] == [{"APIKeyHeader": []}]


def test_page_static_and_metrics_are_open(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert client.get("/static/index.html").status_code == 200
    assert client.get("/static/nope.js").status_code == 404
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "fraudstream_api_queue_open_alerts" in metrics.text


# --- alerts ----------------------------------------------------------------------------------


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


# --- models and control ----------------------------------------------------------------------


def test_models_list_one_and_stale(app: FastAPI, client: TestClient) -> None:
    ingest(
        app, statuses=(make_status("logreg", deciding=True), make_status("tree", deciding=False))
    )
    models = client.get("/api/models", headers=as_(VIEWER)).json()
    assert [(m["status"]["model_name"], m["status"]["deciding"], m["stale"]) for m in models] == [
        ("logreg", True, False),
        ("tree", False, False),
    ]
    assert client.get("/api/models/tree", headers=as_(VIEWER)).json()["status"]["deciding"] is False
    assert client.get("/api/models/forest", headers=as_(VIEWER)).status_code == 404
    app.state.clock.now += timedelta(seconds=16)  # three status intervals of 5 s
    assert all(m["stale"] for m in client.get("/api/models", headers=as_(VIEWER)).json())


def test_thresholds_become_a_control_in_the_outbox(app: FastAPI, client: TestClient) -> None:
    response = client.put(
        "/api/models/thresholds",
        json={"mode": "fixed", "review_threshold": 0.5, "block_threshold": 0.8},
        headers=as_(ADMIN),
    )
    assert response.status_code == 202
    control_id = response.json()["control_id"]
    [row] = outbox(app)
    assert (row.topic, row.key) == ("control", "model")
    control = Control.model_validate_json(row.value)
    assert control.control_id == control_id and control.action == "set_thresholds"
    assert control.requested_by == "ada"
    assert control.thresholds is not None and control.thresholds.block_threshold == 0.8

    history = client.get("/api/control/history", headers=as_(ADMIN)).json()
    assert [(h["control_id"], h["actor"], h["action"]) for h in history] == [
        (control_id, "ada", "set_thresholds")
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "fixed", "review_threshold": 0.5},
        {"mode": "fixed", "review_threshold": 0.9, "block_threshold": 0.5},
        {"mode": "volume", "review_share": 0.01, "block_share": 0.1},
        {"mode": "volume", "review_share": 1.5, "block_share": 0.1},
        {"mode": "sometimes"},
        {"mode": "fixed", "review_threshold": "high", "block_threshold": 0.9},
    ],
)
def test_bad_thresholds_are_422(app: FastAPI, client: TestClient, body: dict[str, Any]) -> None:
    response = client.put("/api/models/thresholds", json=body, headers=as_(ADMIN))
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    assert outbox(app) == []


def test_deciding_model_must_be_known(app: FastAPI, client: TestClient) -> None:
    unknown = client.put("/api/models/deciding", json={"model_name": "tree"}, headers=as_(ADMIN))
    assert unknown.status_code == 422 and "unknown model" in unknown.json()["detail"]
    ingest(
        app, statuses=(make_status("logreg", deciding=True), make_status("tree", deciding=False))
    )
    accepted = client.put("/api/models/deciding", json={"model_name": "tree"}, headers=as_(ADMIN))
    assert accepted.status_code == 202
    [row] = outbox(app)
    control = Control.model_validate_json(row.value)
    assert (control.action, control.model_name, control.control_id) == (
        "set_deciding_model", "tree", accepted.json()["control_id"],
    )  # fmt: skip


# --- roles -------------------------------------------------------------------------------------


def test_roles(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    url = f"/api/alerts/{alert.alert_id}"
    assert client.get(url, headers=as_(VIEWER)).status_code == 200
    for path in ("claim", "release", "reopen"):
        forbidden = client.post(f"{url}/{path}", headers=as_(VIEWER))
        assert forbidden.status_code == 403, path
        assert "analyst" in forbidden.json()["detail"]
    assert (
        client.post(f"{url}/verdict", json={"label": "fraud"}, headers=as_(VIEWER)).status_code
        == 403
    )
    body = {"items": [{"alert_id": alert.alert_id, "label": "fraud"}]}
    assert client.post("/api/alerts/verdicts", json=body, headers=as_(VIEWER)).status_code == 403
    thresholds = {"mode": "volume", "review_share": 0.02, "block_share": 0.002}
    for key in (VIEWER, ANALYST):
        assert (
            client.put("/api/models/thresholds", json=thresholds, headers=as_(key)).status_code
            == 403
        )
        assert (
            client.put(
                "/api/models/deciding", json={"model_name": "x"}, headers=as_(key)
            ).status_code
            == 403
        )
        assert client.get("/api/control/history", headers=as_(key)).status_code == 403
    assert outbox(app) == []


# --- metrics and logs -----------------------------------------------------------------------------


def test_metrics_count_requests_verdicts_and_queue(app: FastAPI, client: TestClient) -> None:
    alert = make_alert(1)
    ingest(app, alert, make_alert(2))
    client.get(f"/api/alerts/{alert.alert_id}", headers=as_(VIEWER))
    client.post(
        f"/api/alerts/{alert.alert_id}/verdict", json={"label": "fraud"}, headers=as_(ANALYST)
    )
    client.get("/api/alerts", headers={"X-API-Key": "wrong-key-0123456789"})
    text = client.get("/metrics").text
    assert (
        'fraudstream_api_http_requests_total{method="GET",route="/api/alerts/{alert_id}",'
        'status="200"} 1.0'
    ) in text
    assert 'route="/api/alerts",status="401"' in text
    assert "fraudstream_api_http_request_duration_seconds_bucket" in text
    assert 'fraudstream_api_verdicts_total{label="fraud"} 1.0' in text
    assert "fraudstream_api_queue_open_alerts 1.0" in text
    assert "fraudstream_api_queue_oldest_open_age_seconds 3598.0" in text
    assert "fraudstream_api_outbox_pending 1.0" in text
    assert "fraudstream_api_outbox_delivered_total 0.0" in text
    assert 'fraudstream_api_alerts_ingested_total{outcome="new"}' in text


def test_keys_are_never_logged(
    app: FastAPI, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = make_alert(1)
    ingest(app, alert)
    client.get(f"/?key={ADMIN}")
    client.get("/api/alerts", headers=as_(ANALYST))
    client.get("/api/alerts", headers={"X-API-Key": "a-wrong-key-0123456789"})
    client.post(
        f"/api/alerts/{alert.alert_id}/verdict", json={"label": "fraud"}, headers=as_(ANALYST)
    )
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    assert "request" in logs  # the request log is there ...
    for secret in (ADMIN, ANALYST, "a-wrong-key-0123456789"):
        assert secret not in logs  # ... without any key


def test_no_key_configured_means_401_everywhere(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        local=LocalSettings(home=tmp_path), api=ApiSettings(database_url=database_url)
    )
    with TestClient(create_app(settings, kafka=False)) as client:
        response = client.get("/api/alerts", headers=as_(ADMIN))
        assert response.status_code == 401
        assert client.get("/health").status_code == 200


def test_database_errors_are_503_not_500(app: FastAPI, client: TestClient) -> None:
    app.state.sessions.kw["bind"].dispose()
    broken = app.state.sessions
    broken.configure(bind=_unreachable_engine())
    response = client.get("/api/alerts", headers=as_(VIEWER))
    assert response.status_code == 503
    assert json.loads(response.text) == {"detail": "the database is unavailable"}


def _unreachable_engine() -> Any:
    from api.db import make_engine

    return make_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )


# --- the bridge's consumer side, without Kafka ------------------------------------------------


def test_consumed_records_are_stored_idempotently_and_bad_ones_skipped(
    app: FastAPI, client: TestClient, settings: Settings
) -> None:
    from api.bridge import store_records

    good = make_alert(1)
    too_long_id = make_alert(2).model_copy(update={"alert_id": "x" * 40})
    nul = make_alert(3, card="card\x00nul")
    records: list[tuple[str, bytes | None]] = [
        ("alerts", good.model_dump_json().encode()),
        ("alerts", good.model_dump_json().encode()),  # read twice: stored once
        ("alerts", b"not json"),
        ("alerts", None),
        ("alerts", b'{"alert_id": "a"}'),
        ("alerts", too_long_id.model_dump_json().encode()),
        ("alerts", nul.model_dump_json().encode()),
        ("model-status", make_status("logreg", deciding=True).model_dump_json().encode()),
        ("model-status", b"[]"),
    ]
    counts = store_records(app.state.sessions, settings, records, T0)
    assert (counts.alerts_new, counts.alerts_duplicate, counts.statuses) == (1, 1, 1)
    # The overlong id and the NUL byte: SQLite may hold them, PostgreSQL may not.
    invalid_alerts = counts.invalid["alerts"]
    assert 3 <= invalid_alerts <= 5 and counts.invalid["model-status"] == 1
    page = client.get("/api/alerts", headers=as_(VIEWER)).json()
    assert good.alert_id in {i["alert_id"] for i in page["items"]}
    assert page["total"] == 1 + (5 - invalid_alerts)
    assert [
        m["status"]["model_name"] for m in client.get("/api/models", headers=as_(VIEWER)).json()
    ] == ["logreg"]


def test_db_upgrade_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from detector.cli import app as cli

    monkeypatch.setenv("FRAUDSTREAM_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'review.db'}")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "latest schema" in result.output and (tmp_path / "db" / "review.db").is_file()
