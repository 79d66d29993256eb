"""The detector's events (attacks and drifts) on the review side, on SQLite and PostgreSQL:
stored by the bridge (a later sighting replaces the stored event, bad records are
skipped and counted), listed by ``GET /api/detector-events`` (order, filters, paging,
refusals, roles), purged after their retention, and announced to the live queue."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api import live
from api.bridge import Bridge, purge_detector_events, store_records
from api.metrics import ApiMetrics
from api.tables import DetectorEventRecord
from detector.contracts import DetectorEvent, DetectorEventKind, event_id_for
from detector.settings import Settings
from tests.factories import settings_with
from tests.unit.test_api import T0, VIEWER, as_

NOW = T0 + timedelta(hours=1)  # the app's clock (conftest)


def make_event(
    kind: DetectorEventKind = "terminal_burst",
    *,
    subject: str = "term-7",
    since: datetime = T0 - timedelta(minutes=20),
    detected_at: datetime = T0 - timedelta(minutes=5),
    after: float = 41.0,
    before: float | None = 3.0,
    unit: str = "cards",
    terminals: tuple[str, ...] | None = None,
    cards: tuple[str, ...] = ("card-1", "card-2"),
    summary: str | None = None,
    emitted_at: datetime | None = None,
) -> DetectorEvent:
    """An event as the detector publishes it (its id derived from kind, subject, since)."""
    return DetectorEvent(
        event_id=event_id_for(kind, subject, since),
        kind=kind,
        subject=subject,
        summary=summary or f"{kind} at {subject}: {before} -> {after} {unit}",
        before=before,
        after=after,
        change=after - (before or 0.0),
        unit=unit,
        since=since,
        detected_at=detected_at,
        terminals=list(terminals if terminals is not None else (subject,)),
        cards=list(cards),
        model_name=None,
        emitted_at=emitted_at or detected_at + timedelta(seconds=1),
    )


def records(settings: Settings, *events: DetectorEvent | bytes) -> list[tuple[str, bytes | None]]:
    topic = settings.kafka.topic_detector_events
    return [(topic, e if isinstance(e, bytes) else e.model_dump_json().encode()) for e in events]


def stored(sessions: sessionmaker[Session]) -> dict[str, float]:
    """The stored events: id -> the value now (``after``)."""
    with sessions() as session:
        return {
            record.event_id: record.payload["after"]
            for record in session.scalars(select(DetectorEventRecord))
        }


def listed(client: TestClient, key: str = VIEWER, **params: Any) -> dict[str, Any]:
    response = client.get("/api/detector-events", params=params, headers=as_(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def subjects(client: TestClient, **params: Any) -> list[str]:
    return [item["subject"] for item in listed(client, **params)["items"]]


def put(app: FastAPI, *events: DetectorEvent, at: datetime = NOW) -> None:
    settings: Settings = app.state.settings
    counts = store_records(app.state.sessions, settings, records(settings, *events), at)
    assert counts.detector_events == len(events) and not counts.invalid


# --- In from the topic ---------------------------------------------------------------------


def test_an_event_is_stored_and_a_later_sighting_replaces_it(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    first = make_event(after=12.0)
    counts = store_records(sessions, settings, records(settings, first), NOW)
    assert (counts.detector_events, counts.detector_events_unchanged) == (1, 0)
    # The same event published again (a replay: only emitted_at differs) changes nothing.
    again = first.model_copy(update={"emitted_at": first.emitted_at + timedelta(minutes=9)})
    counts = store_records(sessions, settings, records(settings, again, first), NOW)
    assert (counts.detector_events, counts.detector_events_unchanged) == (0, 2)
    # The burst grew: the same change (same id), noticed again with more cards.
    grown = make_event(after=41.0, detected_at=T0, cards=("card-1", "card-2", "card-3"))
    assert grown.event_id == first.event_id
    later = NOW + timedelta(minutes=3)
    counts = store_records(sessions, settings, records(settings, grown), later)
    assert counts.detector_events == 1
    assert stored(sessions) == {first.event_id: 41.0}
    with sessions() as session:
        record = session.get(DetectorEventRecord, first.event_id)
        assert record is not None
        assert (record.detected_at, record.received_at) == (T0, later)
        assert record.payload["cards"] == ["card-1", "card-2", "card-3"]
        assert DetectorEvent.model_validate_json(json.dumps(record.payload)) == grown


def test_invalid_events_are_skipped_and_counted(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    good = make_event(subject="term-1")
    long_id = make_event(subject="term-2").model_copy(update={"event_id": "e" * 37})
    nul = make_event(subject="term-\x003")
    nul_card = make_event(subject="term-4", cards=("card\x00",))
    # JSON as Python writes it may hold NaN and Infinity, which a JSON column cannot.
    nan = make_event(subject="term-5").model_dump_json().replace('"after":41.0', '"after":NaN')
    infinite = (
        make_event(subject="term-8").model_dump_json().replace('"change":38.0', '"change":Infinity')
    )
    unknown_kind = make_event(subject="term-6").model_dump(mode="json") | {"kind": "ufo"}
    batch = records(
        settings,
        b"{not json",
        long_id,
        nul,
        good,
        nul_card,
        b'{"event_id": "x"}',
        json.dumps(unknown_kind).encode(),
        nan.encode(),
        infinite.encode(),
    )
    assert "NaN" in nan and "Infinity" in infinite
    counts = store_records(sessions, settings, batch, NOW)
    assert counts.detector_events == 1
    assert counts.invalid == {settings.kafka.topic_detector_events: 8}
    assert list(stored(sessions)) == [good.event_id]
    metrics = ApiMetrics()
    Bridge(settings, sessions, metrics)._count(counts)
    text = generate_latest(metrics.registry).decode()
    assert 'fraudstream_api_detector_events_ingested_total{outcome="invalid"} 8.0' in text
    assert 'fraudstream_api_detector_events_ingested_total{outcome="stored"} 1.0' in text


def test_the_bridge_reads_the_detector_events_topic(settings: Settings) -> None:
    bridge = Bridge(settings, lambda: None, ApiMetrics())  # type: ignore[arg-type,return-value]
    assert settings.kafka.topic_detector_events == "detector-events"
    assert "detector-events" in bridge.topics()


# --- Out through the API -------------------------------------------------------------------


def test_events_are_listed_newest_first_with_all_they_say(app: FastAPI, client: TestClient) -> None:
    burst = make_event(subject="term-7", detected_at=T0 - timedelta(minutes=5))
    shift = make_event(
        "score_shift",
        subject="score_mean",
        before=0.08,
        after=0.19,
        unit="difference",
        terminals=(),
        cards=(),
        detected_at=T0,
    )
    testing = make_event(
        "card_testing",
        subject="term-9",
        after=30.0,
        before=None,
        unit="transactions",
        cards=("card-5",),
        detected_at=T0 - timedelta(hours=2),
    )
    put(app, burst, shift, testing)
    body = listed(client)
    assert body["total"] == 3
    assert [item["subject"] for item in body["items"]] == ["score_mean", "term-7", "term-9"]
    first = body["items"][0]
    assert first == {
        **shift.model_dump(mode="json"),
        "received_at": first["received_at"],
    }
    assert datetime.fromisoformat(first["received_at"]) == NOW
    assert body["items"][2]["before"] is None


def test_filters_and_paging(app: FastAPI, client: TestClient) -> None:
    put(
        app,
        make_event(subject="term-1", detected_at=T0 - timedelta(minutes=1), cards=("card-a",)),
        make_event(subject="term-2", detected_at=T0 - timedelta(minutes=2), cards=("card-b",)),
        make_event(
            "card_testing",
            subject="term-3",
            detected_at=T0 - timedelta(minutes=3),
            cards=("card-a", "card-c"),
        ),
        make_event(
            "feature_shift",
            subject="amount",
            detected_at=T0 - timedelta(minutes=4),
            terminals=("term-2", "term-9"),
            cards=(),
        ),
        make_event(subject="term-5", detected_at=T0 - timedelta(days=2)),
    )
    assert subjects(client, kind="card_testing") == ["term-3"]
    assert subjects(client, kind="terminal_burst") == ["term-1", "term-2", "term-5"]
    assert subjects(client, since=(T0 - timedelta(minutes=2)).isoformat()) == [
        "term-1",
        "term-2",
    ]
    # A naive time is UTC; "Z" works too.
    assert subjects(client, since="2025-03-01T11:57:00") == ["term-1", "term-2", "term-3"]
    assert subjects(client, since="2025-03-01T11:57:00Z") == ["term-1", "term-2", "term-3"]
    # A terminal: the subject, or among the terminals involved.
    assert subjects(client, terminal_id="term-2") == ["term-2", "amount"]
    assert subjects(client, terminal_id="term-9") == ["amount"]
    assert subjects(client, terminal_id="term-404") == []
    assert subjects(client, card_id="card-a") == ["term-1", "term-3"]
    assert subjects(client, card_id="card-a", kind="card_testing") == ["term-3"]
    # Hostile strings are plain values, never SQL or JSON paths.
    assert subjects(client, terminal_id="x' OR 1=1 --") == []
    assert subjects(client, card_id='"]}$.cards') == []
    page = listed(client, limit=2, offset=2)
    assert (page["total"], [i["subject"] for i in page["items"]]) == (5, ["term-3", "amount"])
    assert listed(client, limit=2, offset=10) == {"items": [], "total": 5}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"kind": "ufo"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),
        ({"terminal_id": ""}, "terminal_id"),
        ({"terminal_id": "t\x00"}, "terminal_id"),
        ({"card_id": "c" * 129}, "card_id"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_bad_filters_are_422_with_a_reason(
    client: TestClient, params: dict[str, Any], says: str
) -> None:
    response = client.get("/api/detector-events", params=params, headers=as_(VIEWER))
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]


def test_a_viewer_key_is_needed(client: TestClient) -> None:
    assert client.get("/api/detector-events").status_code == 401
    assert client.get("/api/detector-events", headers=as_("nonsense")).status_code == 401
    assert listed(client) == {"items": [], "total": 0}


def test_the_endpoint_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    parameters = {p["name"] for p in paths["/api/detector-events"]["get"]["parameters"]}
    assert {"kind", "since", "terminal_id", "card_id", "limit", "offset"} <= parameters


# --- Retention -----------------------------------------------------------------------------


def test_old_events_are_purged(settings: Settings, sessions: sessionmaker[Session]) -> None:
    keep = timedelta(days=settings.api.detector_events_keep_days)
    assert keep == timedelta(days=30)
    old, recent = make_event(subject="term-1"), make_event(subject="term-2")
    store_records(sessions, settings, records(settings, old), NOW - keep - timedelta(minutes=1))
    store_records(sessions, settings, records(settings, recent), NOW - keep + timedelta(minutes=1))
    # Stored time counts, not detection time: a replay of old transactions stays.
    replayed = make_event(subject="term-3", detected_at=NOW - 10 * keep, since=NOW - 10 * keep)
    store_records(sessions, settings, records(settings, replayed), NOW)
    assert purge_detector_events(sessions, settings, NOW) == 1
    assert sorted(stored(sessions)) == sorted([recent.event_id, replayed.event_id])
    shorter = settings_with(settings, detector_events_keep_days=0.5)
    assert purge_detector_events(sessions, shorter, NOW + timedelta(days=1)) == 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(DetectorEventRecord)) == 0


def test_the_bridge_purges_events_when_due(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    keep = timedelta(days=settings.api.detector_events_keep_days)
    old, recent = make_event(subject="term-1"), make_event(subject="term-2")
    store_records(sessions, settings, records(settings, old), now - keep - keep)
    store_records(sessions, settings, records(settings, recent), now)
    asyncio.run(Bridge(settings, sessions, ApiMetrics())._purge_when_due())
    assert list(stored(sessions)) == [recent.event_id]


# --- The live queue ------------------------------------------------------------------------


def test_a_stored_event_is_announced_once_and_a_replica_hears_it(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    event = make_event()
    follower = live.Follower(live.Hub(), sessions)
    assert follower.poll() == []  # the first look places the cursor

    async def run() -> list[live.Delivered]:
        hub = live.Hub()
        hub.start()
        try:
            with hub.subscribe() as subscription:
                await asyncio.to_thread(
                    store_records, sessions, settings, records(settings, event, event), NOW
                )
                heard = [await asyncio.wait_for(subscription.next(), 5)]
                # What the other replicas' followers find is the same change: sent once.
                for change in await asyncio.to_thread(follower.poll):
                    hub.deliver(change)
                await asyncio.sleep(0.1)
                while not subscription.queue.empty():
                    heard.append(subscription.queue.get_nowait())
                return heard
        finally:
            hub.stop()

    heard = asyncio.run(run())
    assert [(h.kind, h.data) for h in heard] == [
        (
            "detector_event",
            {"event_id": event.event_id, "kind": "terminal_burst", "subject": "term-7"},
        )
    ]
    # A later sighting is news again, for the follower too.
    grown = make_event(after=80.0, emitted_at=event.emitted_at + timedelta(minutes=1))
    store_records(sessions, settings, records(settings, grown), NOW + timedelta(seconds=30))
    changes = follower.poll()
    assert [(c.kind, c.data["event_id"]) for c in changes] == [("detector_event", event.event_id)]
    assert (
        changes[0].key
        == live.detector_event(grown.event_id, grown.kind, grown.subject, grown.emitted_at).key
    )
