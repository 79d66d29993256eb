"""Synchronous scoring against the real broker and the running detector process:
``POST /api/score`` answered by the detector, once per transaction, and its timeout and
fallback while the detector is away."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import KafkaException
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from detector.contracts import Decision, ScoreRequest, Transaction
from detector.settings import Settings
from tests.factories import settings_with
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until

pytestmark = pytest.mark.slow
T = TypeVar("T")

SCORER = "scorer-key-0123456789abcdef"
VIEWER = "viewer-key-0123456789abcdef"
ANALYST = "analyst-key-0123456789abcdef"
KEYS = f"scorer:pay:{SCORER},viewer:vic:{VIEWER},analyst:ann:{ANALYST}"


def api_settings(settings: Settings, tmp_path: Path, timeout_ms: int) -> Settings:
    return settings_with(
        settings,
        database_url=f"sqlite:///{tmp_path / 'review.db'}",
        api_keys=SecretStr(KEYS),
        score_timeout_ms=timeout_ms,
        score_fallback="review",
    )


def transaction(card: str, minutes: float = 0.0, amount: float = 42.0) -> Transaction:
    return Transaction(
        transaction_id=f"tx-{uuid.uuid4().hex[:12]}",
        timestamp=datetime.now(UTC) - timedelta(hours=1) + timedelta(minutes=minutes),
        card_id=card,
        terminal_id="term-1",
        amount=amount,
    )


def body(tx: Transaction) -> dict[str, Any]:
    return json.loads(tx.model_dump_json())


def decisions_of(settings: Settings) -> list[Decision]:
    return [
        Decision.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_decisions)
    ]


def settled(read: Callable[[], T], timeout: float = 30.0, *, until_found: bool = False) -> T:
    """``read()`` once the new topics' partition leaders answer (and, ``until_found``,
    once it finds something)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = read()
            if found or not until_found or time.monotonic() > deadline:
                return found
        except KafkaException:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def start_detector(settings: Settings, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return detector_process(settings, tmp_path, log, {})


@pytest.fixture
def detector(unique_topics: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "detector.log"
    proc = start_detector(unique_topics, tmp_path, log)
    try:
        # Running once a transaction of its own is decided.
        warm = transaction("card-warm")
        produce(
            unique_topics,
            unique_topics.kafka.topic_transactions,
            [(warm.card_id, warm.model_dump_json().encode())],
        )
        wait_until("the detector's first decision", lambda: decisions_of(unique_topics), proc, log)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_transaction_is_scored_by_the_running_detector_once(
    unique_topics: Settings, tmp_path: Path, detector: subprocess.Popen[bytes]
) -> None:
    settings = api_settings(unique_topics, tmp_path, timeout_ms=10_000)
    tx = transaction("card-1", minutes=1)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/score", json=body(tx), headers={"X-API-Key": SCORER})
        assert answer.status_code == 200, answer.text
        decided = Decision.model_validate_json(answer.content)
        assert not decided.degraded and decided.model_name.startswith("hybrid-tail-")
        assert (decided.transaction_id, decided.card_id, decided.amount) == (
            tx.transaction_id,
            "card-1",
            42.0,
        )
        # The answer is the decision published on decisions, the only one of the transaction.
        [published] = [d for d in decisions_of(settings) if d.transaction_id == tx.transaction_id]
        assert published == decided

        # The same transaction again, on transactions: a duplicate, never decided again.
        produce(
            settings,
            settings.kafka.topic_transactions,
            [(tx.card_id, tx.model_dump_json().encode())],
        )
        log = tmp_path / "detector.log"
        dead = wait_until(
            "the duplicate's dead letter",
            lambda: [
                json.loads(v) for v in consume_all(settings, settings.kafka.topic_dead_letters)
            ],
            detector,
            log,
        )
        assert [(d["reason"], d["source_topic"]) for d in dead] == [
            ("duplicate", settings.kafka.topic_transactions)
        ]
        # The same request again: the same decision, from this process and another.
        again = client.post("/api/score", json=body(tx), headers={"X-API-Key": ANALYST})
        assert again.status_code == 200 and Decision.model_validate_json(again.content) == decided
        # The same new transaction posted twice at once: one request, one decision.
        twice = transaction("card-1", minutes=3)
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda key: client.post(
                        "/api/score", json=body(twice), headers={"X-API-Key": key}
                    ),
                    [SCORER, ANALYST],
                )
            )
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].content == answers[1].content
        assert not Decision.model_validate_json(answers[0].content).degraded
        requests = settled(lambda: consume_all(settings, settings.kafka.topic_score_requests))
        asked = [ScoreRequest.model_validate_json(v).transaction for v in requests]
        assert asked.count(twice) == 1
    with TestClient(create_app(settings)) as restarted:
        again = restarted.post("/api/score", json=body(tx), headers={"X-API-Key": SCORER})
        assert again.status_code == 200 and Decision.model_validate_json(again.content) == decided
        # The same id with another amount is another transaction: refused.
        other = tx.model_copy(update={"amount": 43.0})
        conflict = restarted.post("/api/score", json=body(other), headers={"X-API-Key": SCORER})
        assert conflict.status_code == 409 and "another terminal, amount or time" in conflict.text
    counts = Counter(d.transaction_id for d in decisions_of(settings))
    assert counts[tx.transaction_id] == 1 and counts[twice.transaction_id] == 1
    assert max(counts.values()) == 1

    # A transaction the detector decided from transactions: said so, with the topic.
    seen = transaction("card-2", minutes=2)
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(seen.card_id, seen.model_dump_json().encode())],
    )
    wait_until(
        "the decision from transactions",
        lambda: any(d.transaction_id == seen.transaction_id for d in decisions_of(settings)),
        detector,
        tmp_path / "detector.log",
    )
    with TestClient(create_app(settings)) as client:
        refused = client.post("/api/score", json=body(seen), headers={"X-API-Key": SCORER})
        assert refused.status_code == 409, refused.text
        assert settings.kafka.topic_decisions in refused.json()["detail"]
    assert Counter(d.transaction_id for d in decisions_of(settings))[seen.transaction_id] == 1


def test_bad_requests_and_roles(unique_topics: Settings, tmp_path: Path) -> None:
    settings = api_settings(unique_topics, tmp_path, timeout_ms=200)
    tx = transaction("card-3")
    with TestClient(create_app(settings)) as client:
        bad = {**body(tx), "amount": -5}
        refused = client.post("/api/score", json=bad, headers={"X-API-Key": SCORER})
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("invalid transaction: amount:")
        extra = client.post(
            "/api/score", json={**body(tx), "cvv": "123"}, headers={"X-API-Key": SCORER}
        )
        assert extra.status_code == 422 and "cvv" in extra.json()["detail"]
        future = {**body(tx), "timestamp": "2999-01-01T00:00:00Z"}
        late = client.post("/api/score", json=future, headers={"X-API-Key": SCORER})
        assert late.status_code == 422 and "later than now" in late.json()["detail"]
        junk = client.post("/api/score", content=b"{oops", headers={"X-API-Key": SCORER})
        assert junk.status_code == 422 and "not valid JSON" in junk.json()["detail"]

        viewer = client.post("/api/score", json=body(tx), headers={"X-API-Key": VIEWER})
        assert viewer.status_code == 403 and "scorer, analyst or admin" in viewer.text
        nobody = client.post("/api/score", json=body(tx))
        assert nobody.status_code == 401
        for path in ("/api/me", "/api/alerts", "/api/models", "/api/queue/stats"):
            assert client.get(path, headers={"X-API-Key": SCORER}).status_code == 403, path
    # Nothing refused was published.
    assert settled(lambda: consume_all(settings, settings.kafka.topic_score_requests)) == []


def test_timeout_answers_the_fallback_and_the_detector_decides_later(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = api_settings(unique_topics, tmp_path, timeout_ms=200)
    tx = transaction("card-4")
    log = tmp_path / "detector.log"
    with TestClient(create_app(settings)) as client:
        # No detector running: the fallback, degraded, within the timeout.
        answer = client.post("/api/score", json=body(tx), headers={"X-API-Key": SCORER})
        assert answer.status_code == 200, answer.text
        fallback = Decision.model_validate_json(answer.content)
        assert (fallback.decision, fallback.degraded, fallback.model_name) == (
            "review",
            True,
            "fallback",
        )
        assert fallback.transaction_id == tx.transaction_id
        # Published, though after the answer (the broker was new): decided later.
        [request] = [
            ScoreRequest.model_validate_json(v)
            for v in settled(
                lambda: consume_all(settings, settings.kafka.topic_score_requests),
                until_found=True,
            )
        ]
        assert request.transaction == tx

        # The detector comes: it decides the request from Kafka, and the reply is stored.
        proc = start_detector(settings, tmp_path, log)
        try:
            [published] = wait_until(
                "the late decision",
                lambda: [
                    d for d in decisions_of(settings) if d.transaction_id == tx.transaction_id
                ],
                proc,
                log,
            )
            assert not published.degraded

            def stored_answer() -> Decision | None:
                again = client.post("/api/score", json=body(tx), headers={"X-API-Key": SCORER})
                assert again.status_code == 200, again.text
                got = Decision.model_validate_json(again.content)
                return None if got.degraded else got

            # Until the late reply is stored, asking again publishes a request the
            # detector answers duplicate (or times out): not a second decision.
            assert wait_until("the stored decision", stored_answer, proc, log) == published
        finally:
            proc.terminate()
            proc.wait(30)
        metrics = client.get("/metrics").text
    [timeouts] = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('fraudstream_api_score_answers_total{outcome="timeout"}')
    ]
    assert timeouts >= 1
    assert Counter(d.transaction_id for d in decisions_of(settings))[tx.transaction_id] == 1
