"""The detector events strip in a real browser, against the real app and a real Kafka
broker: an event published while the page is open appears at once (the live stream), and
its terminal and cards open their cases in the queue."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from detector.settings import Settings
from tests.integration.kafka_io import produce
from tests.integration.test_desk import NOW, case_item, payment, publish, wait_for_alerts
from tests.integration.web_fixtures import (
    ANA_KEY,
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    serve,
    watch_csp,
)
from tests.unit.test_detector_events import make_event

pytestmark = pytest.mark.integration

# Set to a file path to keep a screenshot of the strip with an event.
SCREENSHOT_ENV = "FRAUDSTREAM_EVENTS_SCREENSHOT"
# Shorter than the strip's polling (15 s): an event seen sooner came by the live stream.
LIVE_MS = 10_000


@pytest.fixture
def service(unique_topics: Settings, tmp_path: Path) -> Iterator[Service]:
    with serve(unique_topics, tmp_path) as running:
        yield running


def test_a_terminal_burst_shows_live_and_opens_the_terminals_cases(service: Service) -> None:
    shop, attacked, also, elsewhere = "web-shop-502", "card-5101", "card-5102", "card-5103"
    payments = [
        payment(attacked, 1, hours_ago=0.4, amount=1.0, score=0.71, terminal=shop),
        payment(also, 1, hours_ago=0.3, amount=1.5, score=0.66, terminal=shop),
        payment(elsewhere, 1, hours_ago=0.2, amount=980.0, score=0.93, terminal="fuel-7"),
    ]
    publish(service, payments)
    wait_for_alerts(service, expected=3)
    burst = make_event(
        subject=shop,
        before=2.0,
        after=19.0,
        unit="cards",
        since=NOW - timedelta(minutes=25),
        detected_at=NOW - timedelta(minutes=1),
        cards=(attacked, also),
        summary=f"<img src=x onerror=alert(1)> 19 distinct cards at {shop} in 10 min",
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            page.goto(f"{service.url}/?key={ANA_KEY}")
            expect(page.get_by_test_id("case-item")).to_have_count(3)
            expect(page.get_by_test_id("detector-events-empty")).to_have_text(
                "No attack or drift noticed."
            )
            expect(page.get_by_test_id("live")).to_have_attribute("data-state", "live")

            produce(
                service.settings,
                service.settings.kafka.topic_detector_events,
                [(shop, burst.model_dump_json().encode())],
            )
            event = page.get_by_test_id("detector-event")
            expect(event).to_have_count(1, timeout=LIVE_MS)
            expect(event).to_have_attribute("data-kind", "terminal_burst")
            expect(event).to_contain_text("terminal burst")
            # The summary is text, never markup.
            expect(event.get_by_test_id("event-summary")).to_have_text(burst.summary)
            expect(page.locator(".event-summary img")).to_have_count(0)
            expect(event.get_by_test_id("event-amount")).to_have_text("2 → 19 (+17 cards)")
            expect(event).to_contain_text("since")
            expect(page.get_by_test_id("detector-events-empty")).to_be_hidden()
            if path := os.environ.get(SCREENSHOT_ENV):
                page.screenshot(path=path)

            # The terminal opens its cases: the two cards alerted there, not the third.
            event.get_by_test_id("event-terminal").click()
            expect(page.get_by_test_id("view-cases")).to_be_checked()
            expect(page.get_by_test_id("filter-q")).to_have_value(shop)
            items = page.get_by_test_id("case-item")
            expect(items).to_have_count(2)
            expect(case_item(page, attacked)).to_be_visible()
            expect(case_item(page, also)).to_be_visible()
            expect(case_item(page, elsewhere)).to_have_count(0)

            # From the single alerts view too; a card opens its own case.
            page.get_by_test_id("view-alerts").check()
            expect(page.get_by_test_id("queue-item")).to_have_count(3)
            event.locator(f'[data-testid="event-card"][data-id="{also}"]').click()
            expect(page.get_by_test_id("view-cases")).to_be_checked()
            expect(items).to_have_count(1)
            expect(case_item(page, also)).to_be_visible()

            # Grown since: the same event comes again and the strip shows it as it is now.
            grown = burst.model_copy(
                update={"after": 31.0, "change": 29.0, "detected_at": NOW, "emitted_at": NOW}
            )
            produce(
                service.settings,
                service.settings.kafka.topic_detector_events,
                [(shop, grown.model_dump_json().encode())],
            )
            expect(event.get_by_test_id("event-amount")).to_have_text(
                "2 → 31 (+29 cards)", timeout=LIVE_MS
            )
            expect(page.get_by_test_id("detector-event")).to_have_count(1)
            expect(event).to_have_class(re.compile(r"\bfresh\b"))

            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()
