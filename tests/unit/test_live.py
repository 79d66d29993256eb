"""The live queue's hub (fan-out, bounded queues, resync, deduplication, any thread), the
database follower (on a real SQLite database) and the stream tokens."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import live, review
from api.auth import KeyRing, Principal, Role, StreamTokens
from api.db import make_engine, session_factory, upgrade
from api.main import create_app
from detector.settings import ApiSettings, LocalSettings, Settings
from tests.unit.review_support import make_alert

VIEWER = "viewer-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


def test_every_subscriber_hears_an_event_once() -> None:
    async def run() -> None:
        hub = live.Hub()
        hub.start()
        try:
            with hub.subscribe() as a, hub.subscribe() as b:
                event = live.alert_event("a1", "card-1", "open", 1, "received")
                live.publish(event)
                live.publish(event)  # heard again (the follower): sent once
                got_a, got_b = await a.next(), await b.next()
                assert got_a == got_b
                assert got_a.kind == "alert" and got_a.data["alert_id"] == "a1"
                assert got_a.id == hub.last_id
                assert a.queue.empty() and b.queue.empty()
            assert hub.subscribers == 0
        finally:
            hub.stop()

    asyncio.run(run())


def test_a_slow_subscriber_gets_a_resync_and_never_blocks_the_others() -> None:
    async def run() -> None:
        hub = live.Hub(queue_size=3)
        hub.start()
        try:
            with hub.subscribe() as slow, hub.subscribe() as quick:
                for n in range(5):
                    hub.deliver(live.control_event(f"c{n}", "set_mode"))
                    assert (await quick.next()).data["control_id"] == f"c{n}"
                kinds = [slow.queue.get_nowait().kind for _ in range(slow.queue.qsize())]
                assert kinds[0] == "resync" and len(kinds) <= 3
                assert slow.lost >= 3
        finally:
            hub.stop()

    asyncio.run(run())


def test_publish_is_safe_from_worker_threads() -> None:
    async def run() -> None:
        hub = live.Hub()
        hub.start()
        try:
            with hub.subscribe() as subscription:
                threads = [
                    threading.Thread(
                        target=live.publish,
                        args=(live.alert_event(f"a{n}", "c", "open", 1, "received"),),
                    )
                    for n in range(20)
                ]
                for thread in threads:
                    thread.start()
                await asyncio.to_thread(lambda: [t.join() for t in threads])
                heard = {(await asyncio.wait_for(subscription.next(), 2)).data["alert_id"]}
                while not subscription.queue.empty():
                    heard.add(subscription.queue.get_nowait().data["alert_id"])
                assert heard == {f"a{n}" for n in range(20)}
        finally:
            hub.stop()
        live.publish(live.control_event("late", "set_mode"))  # no hub: nothing happens

    asyncio.run(run())


def test_the_follower_reads_every_change_from_the_database(tmp_path: Path) -> None:
    settings = Settings(local=LocalSettings(home=tmp_path))
    engine = make_engine(settings.database)
    upgrade(engine)
    sessions = session_factory(engine)
    follower = live.Follower(live.Hub(), sessions)
    assert follower.poll() == []  # the first look places the cursor
    alert = make_alert(1, card="card-9")
    with sessions() as session:
        review.ingest_alert(review.Context(session).at(datetime.now(UTC)), alert=alert)
    changes = follower.poll()
    assert [(c.kind, c.data["alert_id"], c.data["change"]) for c in changes] == [
        ("alert", alert.alert_id, "received")
    ]
    assert changes[0].key == live.alert_event(alert.alert_id, "card-9", "open", 1, "x").key
    assert follower.poll() == []
    engine.dispose()


def test_a_stream_token_opens_for_a_minute_and_cannot_be_forged() -> None:
    ring = KeyRing([(Role.viewer, "vic", VIEWER), (Role.admin, "ada", ADMIN)])
    now = [1_000_000.0]
    tokens = StreamTokens(ring, clock=lambda: now[0])
    token, expires = tokens.mint(Principal("vic", Role.viewer))
    assert expires == now[0] + 60
    assert tokens.verify(token) == Principal("vic", Role.viewer)
    # Another replica with the same keys accepts it; other keys do not.
    assert StreamTokens(ring, clock=lambda: now[0]).verify(token).name == "vic"
    other = StreamTokens(KeyRing([(Role.viewer, "vic", VIEWER)]), clock=lambda: now[0])
    payload, signature = token.split(".")
    forged = payload.replace(payload[:4], "eyJy") + "." + signature
    for bad, reason in [
        (None, "missing"),
        ("", "missing"),
        ("nonsense", "invalid"),
        (forged, "invalid"),
        ("x" * 600, "invalid"),
        (token + "A", "invalid"),
    ]:
        with pytest.raises(HTTPException) as refused:
            tokens.verify(bad)
        assert refused.value.status_code == 401 and reason in refused.value.detail
    with pytest.raises(HTTPException, match="invalid"):
        other.verify(token)
    now[0] += 60
    with pytest.raises(HTTPException) as expired:
        tokens.verify(token)
    assert "expired" in expired.value.detail


def test_the_stream_routes_refuse_with_a_reason(tmp_path: Path) -> None:
    keys = SecretStr(f"admin:ada:{ADMIN},viewer:vic:{VIEWER}")
    app = create_app(
        Settings(local=LocalSettings(home=tmp_path), api=ApiSettings(api_keys=keys)), kafka=False
    )
    with TestClient(app) as client:
        assert client.get("/api/events/token").status_code == 401
        minted = client.get("/api/events/token", headers={"X-API-Key": VIEWER})
        assert minted.status_code == 200
        assert set(minted.json()) == {"token", "expires_at"}
        for query, reason in [("", "missing"), ("?token=abc.def", "invalid")]:
            refused = client.get(f"/api/events{query}")
            assert refused.status_code == 401 and reason in refused.json()["detail"]
        keyed = client.get("/api/events", headers={"X-API-Key": VIEWER})
        assert keyed.status_code == 422 and "token" in keyed.json()["detail"]
        metrics = client.get("/metrics").text
        assert "fraudstream_api_event_streams 0.0" in metrics


def test_a_replica_hears_a_change_another_one_made(tmp_path: Path) -> None:
    """Two processes share a database; a claim written by one reaches the other's
    subscribers through its follower alone (no publish in between)."""
    settings = Settings(local=LocalSettings(home=tmp_path))
    engine = make_engine(settings.database)
    upgrade(engine)
    sessions = session_factory(engine)
    alert = make_alert(2, card="card-7")
    with sessions() as session:
        review.ingest_alert(review.Context(session).at(datetime.now(UTC)), alert=alert)

    async def run() -> None:
        hub = live.Hub()  # not started: only the follower feeds it
        follower = live.Follower(hub, sessions, interval=0.05)
        await follower.start()
        try:
            with hub.subscribe() as subscription:
                await asyncio.sleep(0.3)  # the follower places its cursor
                with sessions() as session:
                    ctx = review.Context(session).at(datetime.now(UTC))
                    review.claim(ctx, alert_id=alert.alert_id, actor="bob", ttl=60)
                heard = await asyncio.wait_for(subscription.next(), 5)
                assert heard.kind == "alert"
                assert heard.data == {
                    "alert_id": alert.alert_id,
                    "card_id": "card-7",
                    "status": "claimed",
                    "version": 2,
                    "change": "claimed",
                }
        finally:
            await follower.stop()

    asyncio.run(run())
    engine.dispose()
