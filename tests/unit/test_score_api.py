"""Synchronous scoring on the API side: who may score, bad bodies, the fallback without
Kafka, and the store of replies that answers the same transaction again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role, may_score, parse_entry
from api.main import create_app
from api.score import (
    fallback_decision,
    purge_replies,
    same_transaction,
    store_replies,
    stored_decision,
)
from detector.contracts import Decision, ScoreReply, Transaction
from detector.settings import ApiSettings, LocalSettings, Settings

SCORER = "scorer-key-0123456789abcdef"
VIEWER = "viewer-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
T0 = datetime(2026, 4, 12, 9, 30, tzinfo=UTC)


def tx(tx_id: str = "tx-1", amount: float = 42.5) -> Transaction:
    return Transaction(
        transaction_id=tx_id, timestamp=T0, card_id="card-1", terminal_id="term-1", amount=amount
    )


def decision_of(t: Transaction, kind: str = "allow", score: float = 0.1) -> Decision:
    return Decision(
        transaction_id=t.transaction_id,
        card_id=t.card_id,
        terminal_id=t.terminal_id,
        amount=t.amount,
        score=score,
        decision=kind,  # type: ignore[arg-type]
        reasons=["first transaction seen for this card"],
        model_name="hybrid-tail-logreg",
        model_version="0.1.0",
        transaction_time=t.timestamp,
        scored_at=T0 + timedelta(seconds=1),
    )


def reply_of(d: Decision, request_id: str = "r-1") -> ScoreReply:
    return ScoreReply(
        request_id=request_id,
        card_id=d.card_id,
        transaction_id=d.transaction_id,
        status="decided",
        decision=d,
        replied_at=T0,
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        local=LocalSettings(home=tmp_path),
        api=ApiSettings(
            database_url=f"sqlite:///{tmp_path / 'review.db'}",
            api_keys=SecretStr(f"scorer:pay:{SCORER},viewer:{VIEWER},admin:ada:{ADMIN}"),
            score_fallback="allow",
        ),
    )
    with TestClient(create_app(settings, kafka=False)) as client:
        yield client


def test_the_scorer_role_may_score_and_nothing_else() -> None:
    assert parse_entry("scorer:checkout:" + SCORER, "x") == (Role.scorer, "checkout", SCORER)
    assert [r.name for r in Role if may_score(r)] == ["scorer", "analyst", "admin"]


def test_routes_by_role(client: TestClient) -> None:
    body = json.loads(tx().model_dump_json())
    for path in ("/api/me", "/api/alerts", "/api/queue/stats", "/api/models"):
        refused = client.get(path, headers={"X-API-Key": SCORER})
        assert refused.status_code == 403, path
        assert refused.json()["detail"] == "this needs the viewer role; pay is scorer"
    assert (
        client.put(
            "/api/models/deciding", json={"model_name": "x"}, headers={"X-API-Key": SCORER}
        ).status_code
        == 403
    )
    viewer = client.post("/api/score", json=body, headers={"X-API-Key": VIEWER})
    assert viewer.status_code == 403
    assert "needs the scorer, analyst or admin role" in viewer.json()["detail"]
    assert client.post("/api/score", json=body).status_code == 401
    assert client.post("/api/score", json=body, headers={"X-API-Key": "x" * 20}).status_code == 401
    assert client.post("/api/score", json=body, headers={"X-API-Key": ADMIN}).status_code == 200


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"amount": 0}, "amount: Input should be greater than 0"),
        ({"amount": "12.50"}, "amount: Input should be a valid number"),
        ({"card_id": None}, "card_id: Input should be a valid string"),
        ({"cvv": "123"}, "cvv: Extra inputs are not permitted"),
        ({"timestamp": "2026-04-12T09:30:00"}, "timestamp: Input should have timezone info"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "is later than now plus"),
        ({"metadata": {"k": "v" * 70000}}, "exceeds 65536 bytes"),
    ],
)
def test_an_invalid_transaction_is_a_422_in_the_contracts_words(
    client: TestClient, change: dict[str, object], words: str
) -> None:
    body = {**json.loads(tx().model_dump_json()), **change}
    refused = client.post("/api/score", json=body, headers={"X-API-Key": SCORER})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("invalid transaction: ")
    assert words in refused.json()["detail"]


def test_without_kafka_the_answer_is_the_fallback(client: TestClient) -> None:
    answer = client.post(
        "/api/score", json=json.loads(tx().model_dump_json()), headers={"X-API-Key": SCORER}
    )
    assert answer.status_code == 200
    got = Decision.model_validate_json(answer.content)
    assert (got.decision, got.degraded, got.model_name, got.score) == (
        "allow",
        True,
        "fallback",
        0.0,
    )
    metrics = client.get("/metrics").text
    assert 'fraudstream_api_score_answers_total{outcome="unpublished"} 1.0' in metrics


def test_fallback_and_sameness() -> None:
    t = tx()
    fallback = fallback_decision(t, "review", 200, T0)
    assert fallback.degraded and fallback.decision == "review" and "200 ms" in fallback.reasons[0]
    assert same_transaction(t, decision_of(t))
    assert not same_transaction(tx(amount=43.0), decision_of(t))
    assert not same_transaction(t.model_copy(update={"terminal_id": "t2"}), decision_of(t))


def test_replies_are_stored_once_and_purged(sessions: sessionmaker[Session]) -> None:
    first, second = decision_of(tx("a")), decision_of(tx("b"), "block", 0.97)
    assert stored_decision(sessions, ("card-1", "a")) is None
    assert store_replies(sessions, [(reply_of(first), T0), (reply_of(first, "r-2"), T0)]) == 1
    # Read again (another API process, a late copy): kept as first stored.
    other = decision_of(tx("a"), "review", 0.7)
    assert store_replies(sessions, [(reply_of(other, "r-3"), T0), (reply_of(second), T0)]) == 1
    assert stored_decision(sessions, ("card-1", "a")) == first
    assert stored_decision(sessions, ("card-1", "b")) == second
    assert stored_decision(sessions, ("card-2", "a")) is None
    assert purge_replies(sessions, T0 + timedelta(seconds=1)) == 2
    assert stored_decision(sessions, ("card-1", "a")) is None
