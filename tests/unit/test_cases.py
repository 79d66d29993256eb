"""Cases by card through the HTTP API, on SQLite and PostgreSQL: grouping, window, order,
search, timeline, case verdicts, notes, roles; and the decisions the bridge stores."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import review
from api.bridge import purge_decisions, store_records
from api.tables import AlertEventRecord, DecisionRecord
from detector.contracts import Alert, Decision, Label
from detector.settings import Settings
from tests.factories import settings_with
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

NOW = T0 + timedelta(hours=1)  # the app's clock (conftest)


def make_decision(
    n: int,
    *,
    card: str = "card-1",
    terminal: str = "term-1",
    amount: float = 10.0,
    score: float = 0.1,
    decision: str = "allow",
    at: datetime = T0,
) -> Decision:
    return Decision(
        transaction_id=f"tx-{n}",
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        score=score,
        decision=decision,  # type: ignore[arg-type]
        reasons=[],
        model_name="hybrid",
        model_version="0.1.0",
        transaction_time=at,
        scored_at=at,
    )


def decision_of(alert: Alert) -> Decision:
    """The decision the detector published with ``alert``."""
    tx = alert.transaction
    return make_decision(
        int(tx.transaction_id.removeprefix("tx-")),
        card=tx.card_id,
        terminal=tx.terminal_id,
        amount=tx.amount,
        score=alert.score,
        decision=alert.decision,
        at=tx.timestamp,
    )


def store(app: FastAPI, *decisions: Decision, at: datetime = NOW) -> int:
    with app.state.sessions() as session:
        return review.ingest_decisions(review.Context(session).at(at), decisions=decisions)


def cases(client: TestClient, key: str = VIEWER, **params: Any) -> dict[str, Any]:
    response = client.get("/api/cases", params=params, headers=as_(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def cards(client: TestClient, **params: Any) -> list[str]:
    return [case["card_id"] for case in cases(client, **params)["items"]]


def detail(client: TestClient, card: str) -> dict[str, Any]:
    response = client.get(f"/api/cases/{card}", headers=as_(VIEWER))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- Grouping, window, order ---------------------------------------------------------------


def test_a_case_adds_up_a_cards_alerts(app: FastAPI, client: TestClient) -> None:
    ingest(
        app,
        make_alert(1, card="card-1", score=0.7, amount=100.0, at=T0 - timedelta(hours=2)),
        make_alert(2, card="card-1", score=0.95, amount=40.5, decision="block", at=T0),
        make_alert(3, card="card-2", score=0.6, amount=7.0, at=T0),
    )
    body = cases(client)
    assert body["total"] == 2
    first, second = body["items"]
    assert first == {
        "card_id": "card-1",
        "alerts": 2,
        "open_alerts": 2,
        "max_score": 0.95,
        "decision": "block",
        "top_reason": "amount far above the card's habit",
        "amount_at_risk": 140.5,
        "currency": "EUR",
        "first_alert_at": first["first_alert_at"],
        "last_alert_at": first["last_alert_at"],
        "oldest_open_at": first["oldest_open_at"],
        "age_seconds": first["age_seconds"],
        "status": "open",
        "claimed_by": None,
    }
    # make_alert(n) is created n seconds after its transaction time.
    assert at(first["first_alert_at"]) == T0 - timedelta(hours=2) + timedelta(seconds=1)
    assert at(first["last_alert_at"]) == T0 + timedelta(seconds=2)
    assert at(first["oldest_open_at"]) == at(first["first_alert_at"])
    assert first["age_seconds"] == (NOW - at(first["oldest_open_at"])).total_seconds()
    assert (second["card_id"], second["alerts"], second["decision"]) == ("card-2", 1, "review")


def test_the_top_reason_is_that_of_the_highest_scored_alert(
    app: FastAPI, client: TestClient
) -> None:
    low = make_alert(1, score=0.6, at=T0)
    high = make_alert(2, score=0.9, at=T0 - timedelta(hours=1))
    high = high.model_copy(update={"reasons": ["on block list: card card-1", "other"]})
    ingest(app, low, high)
    assert cases(client)["items"][0]["top_reason"] == "on block list: card card-1"


def test_mixed_currencies_have_none(app: FastAPI, client: TestClient) -> None:
    usd = make_alert(2, at=T0)
    usd = usd.model_copy(
        update={"transaction": usd.transaction.model_copy(update={"currency": "USD"})}
    )
    ingest(app, make_alert(1, at=T0), usd)
    assert cases(client)["items"][0]["currency"] is None


def test_a_case_holds_the_alerts_within_the_window_before_the_newest(
    app: FastAPI, client: TestClient
) -> None:
    window = timedelta(hours=72)
    ingest(
        app,
        make_alert(1, at=T0 - window - timedelta(seconds=1)),  # just outside
        make_alert(2, at=T0 - window),  # on the edge: inside
        make_alert(3, at=T0),
        make_alert(4, card="card-2", at=T0 - 10 * window),  # alone: its own newest
    )
    items = {case["card_id"]: case for case in cases(client)["items"]}
    assert items["card-1"]["alerts"] == 2
    assert items["card-2"]["alerts"] == 1
    one = detail(client, "card-1")
    assert one["window_hours"] == 72
    assert [a["transaction_id"] for a in one["alerts"]] == ["tx-3", "tx-2"]  # newest first


def test_the_window_follows_the_setting(settings: Settings, tmp_path: Any) -> None:
    from api.main import create_app
    from tests.unit.test_api import Clock

    app = create_app(settings_with(settings, case_window_hours=1.5), kafka=False)
    app.state.clock = Clock(NOW)
    with TestClient(app) as client:
        ingest(app, make_alert(1, at=T0 - timedelta(hours=2)), make_alert(2, at=T0))
        assert cases(client)["items"][0]["alerts"] == 1
        assert detail(client, "card-1")["window_hours"] == 1.5


def test_cases_are_ordered_by_score_then_longest_waiting_then_card(
    app: FastAPI, client: TestClient
) -> None:
    ingest(
        app,
        make_alert(1, card="c-low", score=0.5, at=T0 - timedelta(hours=5)),
        make_alert(2, card="c-new", score=0.9, at=T0),
        make_alert(3, card="c-old", score=0.9, at=T0 - timedelta(hours=1)),
        # Equal score and equal waiting (both created at T0 + 4 s): the card id decides.
        make_alert(4, card="c-twin-b", score=0.8, at=T0),
        make_alert(5, card="c-twin-a", score=0.8, at=T0 - timedelta(seconds=1)),
        make_alert(6, card="c-top", score=0.99, at=T0),
    )
    assert cards(client) == ["c-top", "c-old", "c-new", "c-twin-a", "c-twin-b", "c-low"]
    assert cards(client, limit=2, offset=1) == ["c-old", "c-new"]


def test_a_decided_case_comes_after_open_ones_of_its_score(
    app: FastAPI, client: TestClient
) -> None:
    ingest(
        app,
        make_alert(1, card="c-decided", score=0.9, at=T0 - timedelta(hours=3)),
        make_alert(2, card="c-open", score=0.9, at=T0),
    )
    response = client.post(
        "/api/cases/c-decided/verdicts", json={"label": "legit"}, headers=as_(ANALYST)
    )
    assert response.status_code == 200
    assert cards(client, status="all") == ["c-open", "c-decided"]
    assert cards(client) == ["c-open"]
    assert cards(client, status="decided") == ["c-decided"]
    decided = cases(client, status="decided")["items"][0]
    assert decided["status"] == "decided" and decided["open_alerts"] == 0
    assert decided["oldest_open_at"] is None and decided["age_seconds"] is None
    assert decided["amount_at_risk"] == 0.0


def test_a_live_claim_names_its_holder(app: FastAPI, client: TestClient) -> None:
    first = make_alert(1, at=T0)
    ingest(app, first, make_alert(2, at=T0))
    assert (
        client.post(f"/api/alerts/{first.alert_id}/claim", headers=as_(ANALYST2)).status_code == 200
    )
    item = cases(client)["items"][0]
    assert (item["claimed_by"], item["open_alerts"], item["status"]) == ("bob", 2, "open")
    app.state.clock.now += timedelta(hours=1)  # the claim (600 s) has expired
    assert cases(client)["items"][0]["claimed_by"] is None


def test_bad_list_parameters_are_422(client: TestClient) -> None:
    for params in (
        {"status": "claimed"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"q": ""},
        {"q": "x" * 129},
        {"q": "card\x00"},
    ):
        response = client.get("/api/cases", params=params, headers=as_(VIEWER))
        assert response.status_code == 422, params
        assert response.json()["detail"]


# --- Search --------------------------------------------------------------------------------


def test_search_by_each_kind_of_id(app: FastAPI, client: TestClient) -> None:
    ingest(
        app,
        make_alert(1, card="card-1", terminal="term-a", at=T0),
        make_alert(2, card="card-2", terminal="term-b", at=T0),
        make_alert(3, card="card-3", terminal="term-b", at=T0),
    )
    store(
        app,
        make_decision(10, card="card-1", terminal="term-quiet", at=T0 - timedelta(hours=1)),
        # Outside card-2's window: card-2's case does not contain it.
        make_decision(11, card="card-2", terminal="term-old", at=T0 - timedelta(days=10)),
        # A card without an alert has no case.
        make_decision(12, card="card-9", terminal="term-quiet", at=T0),
    )
    assert cards(client, q="card-2") == ["card-2"]
    assert cards(client, q="term-b") == ["card-2", "card-3"]
    assert cards(client, q="tx-3") == ["card-3"]  # an alert's transaction
    assert cards(client, q="tx-10") == ["card-1"]  # a decision's transaction
    assert cards(client, q="term-quiet") == ["card-1"]  # a decision's terminal
    assert cards(client, q="term-old") == []
    assert cards(client, q="nobody") == []
    assert cases(client, q="term-b")["total"] == 2
    assert cards(client, q=" card-2 ") == ["card-2"]


# --- One case: alerts, timeline, notes -----------------------------------------------------


def test_the_timeline_merges_decisions_and_alerts(app: FastAPI, client: TestClient) -> None:
    alerted = make_alert(5, amount=900.0, score=0.9, decision="block", at=T0)
    not_yet_stored = make_alert(6, amount=50.0, score=0.7, at=T0 - timedelta(minutes=1))
    ingest(app, alerted, not_yet_stored)
    store(
        app,
        make_decision(1, amount=12.0, at=T0 - timedelta(hours=30)),
        make_decision(2, amount=8.0, terminal="term-2", at=T0 - timedelta(hours=2)),
        decision_of(alerted),
        make_decision(3, at=T0 - timedelta(hours=73)),  # before the window
        make_decision(4, card="card-2", at=T0),  # another card
    )
    body = detail(client, "card-1")
    timeline = body["timeline"]
    assert [p["transaction_id"] for p in timeline] == ["tx-1", "tx-2", "tx-6", "tx-5"]
    assert timeline[0] == {
        "transaction_id": "tx-1",
        "transaction_time": timeline[0]["transaction_time"],
        "amount": 12.0,
        "terminal_id": "term-1",
        "score": 0.1,
        "decision": "allow",
        "alert_id": None,
        "status": None,
        "label": None,
    }
    assert at(timeline[0]["transaction_time"]) == T0 - timedelta(hours=30)
    assert timeline[1]["terminal_id"] == "term-2"
    assert (timeline[2]["alert_id"], timeline[2]["decision"], timeline[2]["status"]) == (
        not_yet_stored.alert_id,
        "review",
        "open",
    )
    assert (timeline[3]["alert_id"], timeline[3]["decision"], timeline[3]["amount"]) == (
        alerted.alert_id,
        "block",
        900.0,
    )
    assert [a["alert_id"] for a in body["alerts"]] == [alerted.alert_id, not_yet_stored.alert_id]
    assert body["alerts"][0]["version"] >= 1 and "reasons" in body["alerts"][0]
    assert body["notes"] == [] and body["status"] == "open"

    client.post(
        f"/api/alerts/{alerted.alert_id}/verdict", json={"label": "fraud"}, headers=as_(ANALYST)
    )
    after = detail(client, "card-1")["timeline"][3]
    assert (after["status"], after["label"]) == ("decided", "fraud")


def test_notes_keep_author_and_time(app: FastAPI, client: TestClient) -> None:
    ingest(app, make_alert(1, at=T0))
    first = client.post(
        "/api/cases/card-1/notes", json={"text": "called the card holder"}, headers=as_(ANALYST)
    )
    assert first.status_code == 201, first.text
    note = first.json()
    assert (note["author"], note["text"]) == ("ann", "called the card holder")
    assert at(note["created_at"]) == NOW and isinstance(note["note_id"], int)
    app.state.clock.now += timedelta(minutes=5)
    second = client.post(
        "/api/cases/card-1/notes", json={"text": "line one\nline two"}, headers=as_(ANALYST2)
    )
    assert second.status_code == 201
    notes = detail(client, "card-1")["notes"]
    assert [(n["author"], n["text"]) for n in notes] == [
        ("ann", "called the card holder"),
        ("bob", "line one\nline two"),
    ]
    assert notes[0]["note_id"] < notes[1]["note_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "   "},
        {"text": "x" * 2001},
        {"text": "nul\x00"},
        {"text": "bell\x07"},
        {},
        {"text": "ok", "author": "someone else"},
    ],
)
def test_bad_notes_are_422(app: FastAPI, client: TestClient, body: dict[str, Any]) -> None:
    ingest(app, make_alert(1, at=T0))
    response = client.post("/api/cases/card-1/notes", json=body, headers=as_(ANALYST))
    assert response.status_code == 422, body
    assert response.json()["detail"]
    assert detail(client, "card-1")["notes"] == []


def test_a_card_without_alerts_is_404(app: FastAPI, client: TestClient) -> None:
    ingest(app, make_alert(1, card="card-1", at=T0))
    store(app, make_decision(2, card="card-quiet", at=T0))  # decisions alone make no case
    for card in ("card-quiet", "nobody"):
        assert client.get(f"/api/cases/{card}", headers=as_(VIEWER)).status_code == 404
        verdict = client.post(
            f"/api/cases/{card}/verdicts", json={"label": "fraud"}, headers=as_(ANALYST)
        )
        assert verdict.status_code == 404
        assert "has no alert" in verdict.json()["detail"]
        note = client.post(f"/api/cases/{card}/notes", json={"text": "x"}, headers=as_(ANALYST))
        assert note.status_code == 404
    assert client.get("/api/cases/" + "x" * 129, headers=as_(VIEWER)).status_code == 422


# --- Case verdicts -------------------------------------------------------------------------


def labels(app: FastAPI) -> list[tuple[str, str, str]]:
    rows = [Label.model_validate_json(row.value) for row in outbox(app) if row.topic == "labels"]
    return [(label.card_id, label.transaction_id, label.label) for label in rows]


def test_a_case_verdict_decides_every_open_alert(app: FastAPI, client: TestClient) -> None:
    done = make_alert(1, at=T0 - timedelta(hours=1))
    ingest(app, done, make_alert(2, at=T0), make_alert(3, at=T0), make_alert(4, card="card-2"))
    client.post(f"/api/alerts/{done.alert_id}/verdict", json={"label": "legit"}, headers=as_(ADMIN))
    response = client.post(
        "/api/cases/card-1/verdicts",
        json={"label": "fraud", "note": "card testing pattern"},
        headers=as_(ANALYST),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["alert"]["transaction_id"], r["ok"], r["status"]) for r in results] == [
        ("tx-2", True, 200),
        ("tx-3", True, 200),
    ]
    assert all(
        r["alert"]["label"] == "fraud" and r["alert"]["decided_by"] == "ann" for r in results
    )
    assert labels(app) == [
        ("card-1", "tx-1", "legit"),
        ("card-1", "tx-2", "fraud"),
        ("card-1", "tx-3", "fraud"),
    ]
    # The audit trail of each alert records the verdict with its note.
    with app.state.sessions() as session:
        events = session.scalars(
            select(AlertEventRecord).where(AlertEventRecord.alert_id == results[0]["alert_id"])
        ).all()
    decided = [e for e in events if e.action == "decided"]
    assert [(e.actor, e.details["label"], e.details["note"]) for e in decided] == [
        ("ann", "fraud", "card testing pattern")
    ]
    assert cards(client) == ["card-2"]
    again = client.post("/api/cases/card-1/verdicts", json={"label": "fraud"}, headers=as_(ANALYST))
    assert again.status_code == 200 and again.json()["results"] == []


def test_a_case_verdict_on_some_alerts(app: FastAPI, client: TestClient) -> None:
    one, two = make_alert(1, at=T0), make_alert(2, at=T0)
    ingest(app, one, two)
    response = client.post(
        "/api/cases/card-1/verdicts",
        json={"label": "legit", "alert_ids": [two.alert_id, two.alert_id]},
        headers=as_(ANALYST),
    )
    assert response.status_code == 200
    assert [r["alert_id"] for r in response.json()["results"]] == [two.alert_id]
    assert labels(app) == [("card-1", "tx-2", "legit")]
    assert cases(client)["items"][0]["open_alerts"] == 1


def test_an_alert_of_another_card_is_422_and_nothing_is_decided(
    app: FastAPI, client: TestClient
) -> None:
    mine, other = make_alert(1, at=T0), make_alert(2, card="card-2", at=T0)
    old = make_alert(3, at=T0 - timedelta(days=10))  # the card's, but outside the case
    ingest(app, mine, other, old)
    for foreign in (other.alert_id, old.alert_id, "no-such-alert"):
        response = client.post(
            "/api/cases/card-1/verdicts",
            json={"label": "fraud", "alert_ids": [mine.alert_id, foreign]},
            headers=as_(ANALYST),
        )
        assert response.status_code == 422, foreign
        assert foreign in response.json()["detail"]
    assert labels(app) == []
    assert (
        client.post(
            "/api/cases/card-1/verdicts",
            json={"label": "fraud", "alert_ids": []},
            headers=as_(ANALYST),
        ).status_code
        == 422
    )


def test_a_case_verdict_respects_claims(app: FastAPI, client: TestClient) -> None:
    held, free = make_alert(1, at=T0), make_alert(2, at=T0)
    ingest(app, held, free)
    assert (
        client.post(f"/api/alerts/{held.alert_id}/claim", headers=as_(ANALYST2)).status_code == 200
    )
    response = client.post(
        "/api/cases/card-1/verdicts", json={"label": "fraud"}, headers=as_(ANALYST)
    )
    by_id = {r["alert_id"]: r for r in response.json()["results"]}
    assert by_id[free.alert_id]["ok"] is True
    assert (by_id[held.alert_id]["ok"], by_id[held.alert_id]["status"]) == (False, 409)
    assert "claimed by bob" in by_id[held.alert_id]["detail"]
    assert labels(app) == [("card-1", "tx-2", "fraud")]


@pytest.mark.parametrize(
    "body",
    [
        {"label": "maybe"},
        {},
        {"label": "fraud", "change": True},
        {"label": "fraud", "note": "x" * 2001},
        {"label": "fraud", "alert_ids": [""]},
    ],
)
def test_bad_case_verdicts_are_422(app: FastAPI, client: TestClient, body: dict[str, Any]) -> None:
    ingest(app, make_alert(1, at=T0))
    response = client.post("/api/cases/card-1/verdicts", json=body, headers=as_(ANALYST))
    assert response.status_code == 422
    assert labels(app) == []


# --- Roles ---------------------------------------------------------------------------------


def test_viewers_read_cases_and_analysts_change_them(app: FastAPI, client: TestClient) -> None:
    ingest(app, make_alert(1, at=T0))
    verdict = {"label": "fraud"}
    note = {"text": "seen"}
    assert client.get("/api/cases").status_code == 401
    assert client.get("/api/cases/card-1", headers=as_("wrong-key-0123456789")).status_code == 401
    assert (
        client.post("/api/cases/card-1/verdicts", json=verdict, headers=as_(VIEWER)).status_code
        == 403
    )
    assert client.post("/api/cases/card-1/notes", json=note, headers=as_(VIEWER)).status_code == 403
    assert client.post("/api/cases/card-1/verdicts", json=verdict).status_code == 401
    assert labels(app) == [] and detail(client, "card-1")["notes"] == []
    assert (
        client.post("/api/cases/card-1/notes", json=note, headers=as_(ANALYST)).status_code == 201
    )
    assert (
        client.post("/api/cases/card-1/verdicts", json=verdict, headers=as_(ANALYST)).status_code
        == 200
    )
    assert labels(app) == [("card-1", "tx-1", "fraud")]


def test_the_cases_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths["/api/cases"]["get"]
    assert "oldest open alert is oldest first" in " ".join(listing["description"].split())
    assert {
        "/api/cases/{card_id}",
        "/api/cases/{card_id}/verdicts",
        "/api/cases/{card_id}/notes",
    } <= set(paths)
    assert "404" in paths["/api/cases/{card_id}/notes"]["post"]["responses"]


# --- Decisions from the topic --------------------------------------------------------------


def records(settings: Settings, *decisions: Decision | bytes) -> list[tuple[str, bytes | None]]:
    topic = settings.kafka.topic_decisions
    return [(topic, d if isinstance(d, bytes) else d.model_dump_json().encode()) for d in decisions]


def stored(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        return dict(
            session.execute(select(DecisionRecord.transaction_id, DecisionRecord.card_id))
            .tuples()
            .all()
        )


def test_a_batch_of_decisions_is_one_transaction(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    batch = records(settings, *(make_decision(n, card=f"card-{n % 7}") for n in range(200)))
    counts = store_records(sessions, settings, batch, NOW)
    assert (counts.decisions_new, counts.decisions_duplicate, counts.invalid) == (200, 0, {})
    assert len(commits) == 1
    assert len(stored(sessions)) == 200


def test_duplicates_are_ignored_and_invalid_decisions_skipped(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    first = make_decision(1, card="card-1", amount=5.0)
    store_records(sessions, settings, records(settings, first), NOW)
    again = first.model_copy(update={"amount": 999.0, "card_id": "card-x"})
    nul = make_decision(3).model_copy(update={"terminal_id": "term\x00"})
    long_model = make_decision(4).model_copy(update={"model_name": "m" * 129})
    not_finite = make_decision(6).model_copy(update={"amount": float("inf")})
    batch = records(
        settings,
        again,
        make_decision(2),
        b"{not json",
        nul,
        long_model,
        make_decision(5),
        make_decision(5),
        b'{"transaction_id": "tx-7"}',
    )
    batch.append((settings.kafka.topic_decisions, not_finite.model_dump_json().encode()))
    counts = store_records(sessions, settings, batch, NOW)
    assert counts.decisions_new == 2  # tx-2 and tx-5
    assert counts.decisions_duplicate == 2  # tx-1 again, tx-5 twice
    assert counts.invalid == {settings.kafka.topic_decisions: 5}
    assert stored(sessions) == {"tx-1": "card-1", "tx-2": "card-1", "tx-5": "card-1"}
    with sessions() as session:
        assert (
            session.scalar(
                select(DecisionRecord.amount).where(DecisionRecord.transaction_id == "tx-1")
            )
            == 5.0
        )


def test_decisions_and_alerts_of_one_batch(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    alert = make_alert(1, at=T0)
    batch = [
        (settings.kafka.topic_alerts, alert.model_dump_json().encode()),
        *records(settings, decision_of(alert), make_decision(2)),
    ]
    counts = store_records(sessions, settings, batch, NOW)
    assert (counts.alerts_new, counts.decisions_new) == (1, 2)


def test_old_decisions_are_purged(settings: Settings, sessions: sessionmaker[Session]) -> None:
    keep = timedelta(days=settings.api.decisions_keep_days)
    assert keep == timedelta(days=14)
    store_records(
        sessions, settings, records(settings, make_decision(1)), NOW - keep - timedelta(minutes=1)
    )
    store_records(
        sessions, settings, records(settings, make_decision(2)), NOW - keep + timedelta(minutes=1)
    )
    # Stored time, not transaction time, counts: a replay of old transactions stays.
    store_records(sessions, settings, records(settings, make_decision(3, at=NOW - 10 * keep)), NOW)
    assert purge_decisions(sessions, settings, NOW) == 1
    assert sorted(stored(sessions)) == ["tx-2", "tx-3"]
    shorter = settings_with(settings, decisions_keep_days=0.5)
    assert purge_decisions(sessions, shorter, NOW + timedelta(days=1)) == 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DecisionRecord)) == 0
