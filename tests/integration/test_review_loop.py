"""The whole loop with real parts: a real broker, the detector as a process, the review
service with its Kafka bridge. A planted fraud is alerted and queued, an analyst marks it
fraud over HTTP, the detector learns the label, and the same pattern scores higher next."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from detector.contracts import Decision, Label, Transaction
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_api_kafka import ANALYST, review_settings
from tests.unit.test_learning_loop import twin_card_history

pytestmark = pytest.mark.slow

HEADERS = {"X-API-Key": ANALYST}


def history() -> tuple[list[Transaction], list[Label]]:
    """Two weeks of simulated traffic, the chargebacks of its frauds, and two twin cards."""
    records = list(
        itertools.islice(simulate(SimulationConfig(n_customers=300, n_terminals=600, seed=7)), 8000)
    )
    txs = [r.transaction for r in records]
    chargebacks = [
        Label(
            transaction_id=r.transaction.transaction_id,
            card_id=r.transaction.card_id,
            label="fraud",
            source="chargeback",
            labeled_at=datetime.now(UTC),
        )
        for r in records
        if r.is_fraud
    ]
    return [*txs, *twin_card_history(txs[-1].timestamp)], chargebacks


def send(settings: Settings, txs: list[Transaction]) -> None:
    records = [(t.card_id, t.model_dump_json().encode()) for t in txs]
    produce(settings, settings.kafka.topic_transactions, records)


def deciding_status(client: TestClient) -> dict[str, Any] | None:
    models = client.get("/api/models", headers=HEADERS).json()
    return next((m["status"] for m in models if m["status"]["deciding"]), None)


def queued(client: TestClient, transaction_id: str, card_id: str) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        page = client.get("/api/alerts", params={"card_id": card_id}, headers=HEADERS).json()
        return next((a for a in page["items"] if a["transaction_id"] == transaction_id), None)

    return check


def test_an_analyst_verdict_teaches_the_running_detector(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = review_settings(unique_topics, tmp_path)
    txs, chargebacks = history()
    send(settings, txs)
    produce(
        settings,
        settings.kafka.topic_labels,
        [(label.card_id, label.model_dump_json().encode()) for label in chargebacks],
    )
    log = tmp_path / "detector.log"
    proc = detector_process(
        settings,
        tmp_path,
        log,
        {
            "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
            "FRAUDSTREAM_PRESUME_LEGIT_DAYS": "1",
            "FRAUDSTREAM_THRESHOLD_MODE": "fixed",
            "FRAUDSTREAM_REVIEW_THRESHOLD": "0.9",
            "FRAUDSTREAM_BLOCK_THRESHOLD": "0.99999",
        },
    )
    try:
        with TestClient(create_app(settings)) as client:

            def caught_up() -> dict[str, Any] | None:
                status = deciding_status(client)
                done = status is not None and status["transactions_scored"] == len(txs)
                learned = done and status["labels_by_source"].get("chargeback") == len(chargebacks)
                return status if learned else None

            before = wait_until("the history scored and learned", caught_up, proc, log)
            assert before["labels_by_source"].get("analyst", 0) == 0

            # Five times the card's usual amount, at a terminal it never used.
            planted = Transaction(
                transaction_id="planted-1",
                timestamp=txs[-1].timestamp + timedelta(minutes=1),
                card_id="card-twin-a",
                terminal_id="term-shared",
                amount=250.0,
            )
            send(settings, [planted])
            alert = wait_until(
                "the planted fraud in the queue",
                queued(client, planted.transaction_id, planted.card_id),
                proc,
                log,
            )
            assert alert["status"] == "open" and alert["decision"] in ("review", "block")

            url = f"/api/alerts/{alert['alert_id']}"
            assert client.post(f"{url}/claim", headers=HEADERS).status_code == 200
            verdict = client.post(
                f"{url}/verdict", headers=HEADERS, json={"label": "fraud", "note": "confirmed"}
            )
            assert verdict.status_code == 200, verdict.text
            assert verdict.json()["status"] == "decided"

            def learned() -> dict[str, Any] | None:
                status = deciding_status(client)
                ok = status is not None and status["labels_by_source"].get("analyst") == 1
                return status if ok else None

            after = wait_until("the analyst's label learned", learned, proc, log, timeout=30)
            assert after["labels_learned"]["fraud"] == before["labels_learned"]["fraud"] + 1

            # The twin card does the same at the same terminal: it scores higher now.
            twin = planted.model_copy(
                update={
                    "transaction_id": "planted-2",
                    "card_id": "card-twin-b",
                    "timestamp": planted.timestamp + timedelta(seconds=1),
                }
            )
            send(settings, [twin])

            def decision_of_twin() -> Decision | None:
                found = map(
                    Decision.model_validate_json,
                    consume_all(settings, settings.kafka.topic_decisions),
                )
                return next((d for d in found if d.transaction_id == twin.transaction_id), None)

            second = wait_until("the twin's decision", decision_of_twin, proc, log)
            assert second.score > alert["score"], (alert["score"], second.score)
            history_actions = [
                e["action"] for e in client.get(f"{url}/history", headers=HEADERS).json()
            ]
            assert history_actions[-1] == "decided"
    finally:
        proc.terminate()
        proc.wait(30)
