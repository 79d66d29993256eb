"""The exploration sample with real parts: a real broker, the detector as a process and the
review service with its Kafka bridge. Allowed transactions chosen by their id reach the
desk as ordinary review alerts, their verdicts go back as labels of origin
``exploration``, and the model status shows the sample's figures apart."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.tables import AlertRecord
from detector.contracts import Decision, Label
from detector.exploration import sample_point
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_api_kafka import ANALYST, review_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADERS = {"X-API-Key": ANALYST}
SHARE = 0.04
N = 1500


def test_the_exploration_sample_reaches_the_desk_and_measures_the_model(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = review_settings(unique_topics, tmp_path)
    records = list(
        itertools.islice(simulate(SimulationConfig(n_customers=200, n_terminals=300, seed=5)), N)
    )
    txs = [r.transaction for r in records]
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(t.card_id, t.model_dump_json().encode()) for t in txs],
    )
    log = tmp_path / "detector.log"
    proc = detector_process(
        settings,
        tmp_path,
        log,
        {
            "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
            "FRAUDSTREAM_PRESUME_LEGIT_DAYS": "0",
            "FRAUDSTREAM_THRESHOLD_MODE": "fixed",
            "FRAUDSTREAM_REVIEW_THRESHOLD": "1.0",
            "FRAUDSTREAM_BLOCK_THRESHOLD": "1.0",
            "FRAUDSTREAM_EXPLORATION_SHARE": str(SHARE),
            "FRAUDSTREAM_EXPLORATION_MAX_PER_HOUR": "100000",
            "FRAUDSTREAM_QUALITY_MIN_EXPLORATION": "10",
        },
    )
    try:
        with TestClient(create_app(settings)) as client:

            def all_decided() -> list[Decision] | None:
                found = [
                    Decision.model_validate_json(v)
                    for v in consume_all(settings, settings.kafka.topic_decisions)
                ]
                return found if len(found) == N else None

            decisions = wait_until("every transaction decided", all_decided, proc, log)
            allowed = {d.transaction_id for d in decisions if d.decision == "allow"}
            # chosen by the hash of the id among the allowed, never by the score
            expected = {t for t in allowed if sample_point(t) < SHARE}
            assert {d.transaction_id for d in decisions if d.exploration} == expected
            assert 20 <= len(expected) <= 110

            def queued() -> list[dict[str, Any]] | None:
                page = client.get("/api/alerts", params={"limit": 500}, headers=HEADERS).json()
                items = [a for a in page["items"] if a["transaction_id"] in expected]
                return items if len(items) == len(expected) else None

            alerts = wait_until("the sample in the queue", queued, proc, log)
            assert {a["decision"] for a in alerts} == {"review"}
            assert all("exploration" not in a for a in alerts)  # judged blind
            with client.app.state.sessions() as session:  # type: ignore[attr-defined]
                marked = {r.transaction_id for r in session.query(AlertRecord) if r.exploration}
            assert marked == expected

            # One fraud among the sample, the rest legitimate.
            first, *rest = sorted(alerts, key=lambda a: a["transaction_id"])
            items = [{"alert_id": first["alert_id"], "label": "fraud"}]
            items += [{"alert_id": a["alert_id"], "label": "legit"} for a in rest]
            response = client.post("/api/alerts/verdicts", headers=HEADERS, json={"items": items})
            assert response.status_code == 200, response.text
            assert all(r["ok"] for r in response.json()["results"])

            def published() -> list[Label] | None:
                labels = [
                    Label.model_validate_json(v)
                    for v in consume_all(settings, settings.kafka.topic_labels)
                ]
                return labels if len(labels) == len(expected) else None

            labels = wait_until("the verdicts on the labels topic", published, proc, log)
            assert {label.origin for label in labels} == {"exploration"}
            assert {label.transaction_id for label in labels} == expected

            def measured() -> dict[str, Any] | None:
                models = client.get("/api/models", headers=HEADERS).json()
                status = next((m["status"] for m in models if m["status"]["deciding"]), None)
                if status is None:
                    return None
                sample = status["quality"]["by_origin"].get("exploration")
                return status if sample and sample["labels"] == len(expected) else None

            status = wait_until("the sample's figures in /api/models", measured, proc, log)
            quality = status["quality"]
            assert quality["by_origin"]["exploration"]["frauds"] == 1
            assert quality["allowed_fraud_rate"] == pytest.approx(1 / len(expected))
            assert quality["exploration_share"] == pytest.approx(len(expected) / len(allowed))
            assert quality["min_exploration"] == 10
            assert set(quality["by_origin"]) == {"exploration"}
    finally:
        proc.terminate()
        proc.wait(30)
