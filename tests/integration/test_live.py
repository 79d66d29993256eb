"""The live queue in a real browser: with the page open and its stream connected, an alert
produced to Kafka appears without a reload within 2 s, another analyst's verdict shows at
once, and the page does not poll while the stream is up (real app, real broker, Chromium)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from playwright.sync_api import Request, expect, sync_playwright

from detector.contracts import Alert
from tests.integration.kafka_io import produce
from tests.integration.test_web import (
    ANA_KEY,
    BOB_KEY,
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    make_alert,
    queue_item,
    service,
    watch_csp,
)

pytestmark = pytest.mark.integration
__all__ = ["service"]  # the fixture: the real app with its Kafka bridge, served by uvicorn

# A functional bound of the feature (produce -> visible), not a benchmark.
LIVE_BOUND_SECONDS = 2.0


def test_changes_appear_live_and_polling_stops(service: Service) -> None:
    settings = service.settings

    def send(card: str, score: float) -> Alert:
        alert = make_alert(f"tx-{uuid.uuid4().hex[:8]}", card, 120.0, score)
        produce(
            settings,
            settings.kafka.topic_alerts,
            [(card, alert.model_dump_json().encode())],
        )
        return alert

    # The API's consumer joins its group first (no bound on that): a first alert is stored.
    warm = send("card-live-0", 0.9)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page_ = httpx.get(f"{service.url}/api/alerts", headers={"X-API-Key": ANA_KEY}).json()
        if page_["total"]:
            break
        time.sleep(0.2)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            polls: list[str] = []

            def on_request(request: Request) -> None:
                if request.method == "GET" and "/api/alerts?" in request.url:
                    polls.append(request.url)

            page.on("request", on_request)
            page.goto(f"{service.url}/?key={ANA_KEY}")
            expect(page.get_by_test_id("live")).to_have_text("live")
            # The queue lists cases first; this test follows single alerts.
            page.get_by_test_id("view-alerts").check()
            expect(queue_item(page, warm)).to_be_visible()

            # The stream is up: no polling of the queue for 10 s.
            page.wait_for_timeout(1000)
            polls.clear()
            page.wait_for_timeout(10_000)
            assert polls == [], polls

            # An alert produced to Kafka appears without a reload, within the bound.
            fresh = send("card-live-1", 0.95)
            started = time.monotonic()
            expect(queue_item(page, fresh)).to_be_visible(timeout=TIMEOUT_MS)
            seconds = time.monotonic() - started
            assert seconds <= LIVE_BOUND_SECONDS, f"visible after {seconds:.2f} s"

            # Another analyst decides it through the API: the page follows, no reload.
            queue_item(page, fresh).click()
            expect(page.get_by_test_id("detail-status")).to_contain_text("open")
            alert_id = fresh.alert_id
            headers = {"X-API-Key": BOB_KEY}
            claimed = httpx.post(f"{service.url}/api/alerts/{alert_id}/claim", headers=headers)
            assert claimed.status_code == 200, claimed.text
            decided = httpx.post(
                f"{service.url}/api/alerts/{alert_id}/verdict",
                headers=headers,
                json={"label": "fraud"},
            )
            assert decided.status_code == 200, decided.text
            expect(page.get_by_test_id("detail-status")).to_contain_text(
                "decided", timeout=LIVE_BOUND_SECONDS * 1000
            )
            expect(queue_item(page, fresh)).to_have_count(0)

            # The gauge counts the open stream.
            metrics = httpx.get(f"{service.url}/metrics").text
            assert "fraudstream_api_event_streams 1.0" in metrics
            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()
