"""The review service's HTTP contract, on SQLite and PostgreSQL, without Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import review
from api.main import create_app
from api.tables import OutboxRecord
from detector import __version__
from detector.contracts import (
    Alert,
    Control,
    ModelStatus,
    Transaction,
    alert_id_for,
)
from detector.settings import ApiSettings, LocalSettings, Settings
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


def test_a_capacity_becomes_a_control(app: FastAPI, client: TestClient) -> None:
    response = client.put(
        "/api/models/thresholds",
        json={"mode": "capacity", "review_capacity_per_hour": 30, "block_threshold": 1.0},
        headers=as_(ADMIN),
    )
    assert response.status_code == 202
    [row] = outbox(app)
    control = Control.model_validate_json(row.value)
    assert control.thresholds is not None
    assert (control.thresholds.mode, control.thresholds.review_capacity_per_hour) == (
        "capacity",
        30,
    )
    assert control.thresholds.block_threshold == 1.0


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "capacity"},
        {"mode": "capacity", "review_capacity_per_hour": 0},
        {"mode": "capacity", "review_capacity_per_hour": -5},
        {"mode": "capacity", "review_capacity_per_hour": 60, "block_threshold": 1.5},
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
