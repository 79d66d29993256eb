"""Detector events against a real broker: published on their topic as the detector does,
stored by the API's bridge, read back through ``GET /api/detector-events``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from detector.settings import Settings
from tests.integration.kafka_io import produce
from tests.integration.test_api_kafka import ANALYST, review_settings, wait_for
from tests.unit.test_api import T0
from tests.unit.test_detector_events import make_event

pytestmark = pytest.mark.integration
HEADERS = {"X-API-Key": ANALYST}


@pytest.fixture
def served(unique_topics: Settings, tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(review_settings(unique_topics, tmp_path))
    with TestClient(app) as client:
        yield app, client


def events(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/detector-events", params=params, headers=HEADERS)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_detector_events_through_kafka(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    settings: Settings = app.state.settings
    topic = settings.kafka.topic_detector_events
    burst = make_event(subject="term-77", after=12.0, cards=("card-1", "card-2"))
    shift = make_event(
        "score_shift",
        subject="score_mean",
        before=0.08,
        after=0.21,
        unit="difference",
        terminals=(),
        cards=(),
        detected_at=T0,
    )
    # Keyed as the detector keys them: by the terminal for terminal events, else by kind.
    produce(
        settings,
        topic,
        [
            ("term-77", burst.model_dump_json().encode()),
            ("score_shift", b"not an event"),
            ("score_shift", shift.model_dump_json().encode()),
        ],
    )
    stored = wait_for("two events", lambda: len(events(client)) == 2 and events(client))
    assert [e["subject"] for e in stored] == ["score_mean", "term-77"]
    assert stored[1]["terminals"] == ["term-77"] and stored[1]["after"] == 12.0

    # The burst grows: the same event (same id) comes again and replaces the stored one.
    grown = make_event(
        subject="term-77",
        after=40.0,
        cards=("card-1", "card-2", "card-3"),
        detected_at=T0 + timedelta(minutes=2),
    )
    assert grown.event_id == burst.event_id
    produce(settings, topic, [("term-77", grown.model_dump_json().encode())])
    replaced = wait_for(
        "the grown burst",
        lambda: [e for e in events(client, terminal_id="term-77") if e["after"] == 40.0],
    )
    assert [(e["event_id"], e["cards"]) for e in replaced] == [
        (burst.event_id, ["card-1", "card-2", "card-3"])
    ]
    assert len(events(client)) == 2
    assert [e["subject"] for e in events(client, card_id="card-3")] == ["term-77"]
    metrics = client.get("/metrics").text
    assert 'fraudstream_api_detector_events_ingested_total{outcome="invalid"} 1.0' in metrics
    assert 'fraudstream_api_detector_events_ingested_total{outcome="stored"} 3.0' in metrics
