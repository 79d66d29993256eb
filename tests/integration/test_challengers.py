"""A challenger's life with real parts: an admin starts it over HTTP, the running detector
scores and learns with it in shadow and checkpoints it, the admin rolls it back to a
checkpoint (a new generation of its version) and retires it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from detector.contracts import Label, ModelStatus, Transaction
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_api_kafka import ADMIN, review_settings

pytestmark = pytest.mark.slow

HEADERS = {"X-API-Key": ADMIN}
LOGREG, CHALLENGER = "hybrid-tail-logreg", "tree-fast"


def traffic() -> tuple[list[Transaction], list[Transaction], list[Label]]:
    """Simulated traffic in two parts, and a label for each transaction of the second."""
    records = list(
        itertools.islice(simulate(SimulationConfig(n_customers=200, n_terminals=400, seed=5)), 900)
    )
    first, second = records[:600], records[600:]
    labels = [
        Label(
            transaction_id=r.transaction.transaction_id,
            card_id=r.transaction.card_id,
            label="fraud" if r.is_fraud else "legit",
            source="chargeback",
            labeled_at=datetime.now(UTC),
        )
        for r in second
    ]
    return [r.transaction for r in first], [r.transaction for r in second], labels


def send(settings: Settings, topic: str, records: list[Transaction] | list[Label]) -> None:
    produce(settings, topic, [(r.card_id, r.model_dump_json().encode()) for r in records])


def model(client: TestClient, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        models = client.get("/api/models", headers=HEADERS).json()
        return next((m["status"] for m in models if m["status"]["model_name"] == name), None)

    return check


def test_a_challenger_is_started_rolled_back_and_retired(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = review_settings(unique_topics, tmp_path)
    first, second, labels = traffic()
    send(settings, settings.kafka.topic_transactions, first)
    log = tmp_path / "detector.log"
    proc = detector_process(
        settings,
        tmp_path,
        log,
        {
            "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
            "FRAUDSTREAM_PRESUME_LEGIT_DAYS": "0",
            "FRAUDSTREAM_CHECKPOINT_EVERY_LABELS": "100",
        },
    )
    try:
        with TestClient(create_app(settings)) as client:

            def first_scored() -> dict[str, Any] | None:
                status = model(client, LOGREG)()
                return status if status and status["transactions_scored"] == len(first) else None

            deciding = wait_until("the first traffic scored", first_scored, proc, log)
            assert deciding["deciding"] and deciding["model_version"].endswith(".1")

            # A bad challenger is refused before it reaches the detector.
            bad = {"name": CHALLENGER, "kind": "tree", "params": {"n_models": 3}}
            refused = client.post("/api/models", json=bad, headers=HEADERS)
            assert refused.status_code == 422 and "tree takes no n_models" in refused.text
            body = {"name": CHALLENGER, "kind": "tree", "params": {"grace_period": 20, "seed": 3}}
            started = client.post("/api/models", json=body, headers=HEADERS)
            assert started.status_code == 202, started.text
            added = wait_until("the challenger reported", model(client, CHALLENGER), proc, log)
            assert not added["deciding"] and added["transactions_scored"] == 0
            assert added["spec"] == {
                "name": CHALLENGER,
                "kind": "tree",
                "params": {
                    "warmup_frauds": None,
                    "learning_rate": None,
                    "l2": None,
                    "grace_period": 20,
                    "n_models": None,
                    "seed": 3,
                },
            }
            version = added["model_version"]
            assert version.endswith(".1") and version != deciding["model_version"]

            # It scores in shadow and learns the same labels; checkpoints every 100.
            send(settings, settings.kafka.topic_transactions, second)
            send(settings, settings.kafka.topic_labels, labels)

            def learned() -> dict[str, Any] | None:
                status = model(client, CHALLENGER)()
                done = (
                    status is not None
                    and status["transactions_scored"] == len(second)
                    and sum(status["labels_learned"].values()) == len(labels)
                )
                return status if done else None

            trained = wait_until("the challenger scored and learned", learned, proc, log)
            ids = [c["checkpoint_id"] for c in trained["checkpoints"]]
            assert ids == ["1-100", "1-200", "1-300"]
            assert all(c["model_version"] == version for c in trained["checkpoints"])
            assert model(client, LOGREG)()["deciding"]  # type: ignore[index]

            # A checkpoint it does not have is refused; one it has is restored.
            unknown = client.post(
                f"/api/models/{CHALLENGER}/rollback",
                json={"checkpoint_id": "1-999"},
                headers=HEADERS,
            )
            assert unknown.status_code == 422 and "1-100, 1-200, 1-300" in unknown.text
            back = client.post(
                f"/api/models/{CHALLENGER}/rollback",
                json={"checkpoint_id": "1-100"},
                headers=HEADERS,
            )
            assert back.status_code == 202, back.text

            def rolled_back() -> dict[str, Any] | None:
                status = model(client, CHALLENGER)()
                return status if status and status["model_version"].endswith(".2") else None

            restored = wait_until("the challenger rolled back", rolled_back, proc, log)
            assert restored["model_version"] == version.removesuffix(".1") + ".2"
            assert sum(restored["labels_learned"].values()) == 100
            assert restored["last_control_id"] == back.json()["control_id"]

            # The deciding model cannot be retired; the challenger can.
            refused = client.delete(f"/api/models/{LOGREG}", headers=HEADERS)
            assert refused.status_code == 409
            retired = client.delete(f"/api/models/{CHALLENGER}", headers=HEADERS)
            assert retired.status_code == 202
            retire_id = retired.json()["control_id"]

            def applied() -> dict[str, Any] | None:
                status = model(client, LOGREG)()
                return status if status and status["last_control_id"] == retire_id else None

            wait_until("the retirement applied", applied, proc, log)
            after = [
                s
                for s in map(
                    ModelStatus.model_validate_json,
                    consume_all(settings, settings.kafka.topic_model_status),
                )
                if s.last_control_id == retire_id
            ]
            assert after and {s.model_name for s in after} == {LOGREG}
            left = model(client, CHALLENGER)()
            # gone; at most a status emitted before the retirement, never one after
            assert left is None or left["last_control_id"] != retire_id
            files = list((tmp_path / "recovery" / "checkpoints" / CHALLENGER).glob("*/*.model"))
            assert files == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
