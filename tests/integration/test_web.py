"""The analysts' page in a real browser, against the real app and a real Kafka broker.

An alert and a model status go onto the topics; the page (Debian's Chromium driven by
Playwright) shows them; an analyst claims and decides the alert; the verdict comes out of
the labels topic as a ``Label`` the detector can learn from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from detector.contracts import Alert, ModelStatus, Transaction, alert_id_for
from detector.settings import Settings
from tests.factories import model_status
from tests.integration.kafka_io import produce
from tests.integration.web_fixtures import (
    ANA_KEY,
    BOB_KEY,
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    read_labels,
    serve,
    watch_csp,
)

pytestmark = pytest.mark.integration

# Set to a file path to keep a screenshot of the page at the end of the test.
SCREENSHOT_ENV = "FRAUDSTREAM_WEB_SCREENSHOT"


@pytest.fixture
def service(unique_topics: Settings, tmp_path: Path) -> Iterator[Service]:
    """The real app with two analysts' keys (ana and bob)."""
    with serve(unique_topics, tmp_path) as running:
        yield running


def make_alert(transaction_id: str, card_id: str, amount: float, score: float) -> Alert:
    now = datetime.now(UTC)
    transaction = Transaction(
        transaction_id=transaction_id,
        timestamp=now,
        card_id=card_id,
        terminal_id="terminal-42",
        amount=amount,
        currency="EUR",
        country="FR",
        channel="online",
    )
    return Alert(
        alert_id=alert_id_for(card_id, transaction_id),
        transaction=transaction,
        score=score,
        decision="block",
        reasons=["amount is 14x the card's 7-day average", "new terminal for this card"],
        features={"amount": amount, "card_mean_amount_7d": amount / 14, "terminal_new": 1.0},
        model_name="logreg",
        model_version="v7",
        created_at=now,
    )


def make_status() -> ModelStatus:
    return model_status(
        "logreg",
        model_version="v7",
        transactions_scored=123_456,
        decisions={"allow": 122_000, "review": 1_300, "block": 156},
        labels_learned={"fraud": 321, "legit": 45_678},
        labels_by_source={"chargeback": 300, "analyst": 21},
        classifier_weight=0.9,
        quality={
            "window": 5000,
            "frauds": 40,
            "auc": 0.934,
            "average_precision": 0.61,
            "alert_precision": 0.42,
            "alert_recall": 0.8,
        },
        threshold_mode="fixed",
        review_share=None,
        block_share=None,
        emitted_at=datetime.now(UTC),
    )


def queue_item(page: Page, alert: Alert) -> Locator:
    return page.locator(f'[data-testid="queue-item"][data-alert-id="{alert.alert_id}"]')


def test_an_analyst_decides_an_alert_in_the_browser(service: Service) -> None:
    settings = service.settings
    mine = make_alert(f"tx-{uuid.uuid4().hex[:8]}", "card-web-1", 640.0, 0.97)
    theirs = make_alert(f"tx-{uuid.uuid4().hex[:8]}", "card-web-2", 55.0, 0.91)
    produce(
        settings,
        settings.kafka.topic_alerts,
        [(a.transaction.card_id, a.model_dump_json().encode()) for a in (mine, theirs)],
    )
    produce(
        settings,
        settings.kafka.topic_model_status,
        [("logreg", make_status().model_dump_json().encode())],
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            response = page.goto(service.url)
            assert response is not None
            assert "default-src 'self'" in response.headers["content-security-policy"]

            # The key is asked for once, then kept by the browser.
            expect(page.get_by_test_id("key-dialog")).to_be_visible()
            page.get_by_label("X-API-Key").fill(ANA_KEY)
            page.get_by_test_id("key-save").click()
            expect(page.get_by_test_id("key-dialog")).to_be_hidden()
            expect(page.get_by_test_id("me")).to_have_text("ana · analyst")

            # The queue lists cases first; this test works single alerts.
            page.get_by_test_id("view-alerts").check()

            # Both alerts arrive through Kafka; the queue refreshes on its own.
            expect(queue_item(page, mine)).to_be_visible()
            expect(queue_item(page, theirs)).to_be_visible()

            # The model panel shows the published status.
            model = page.locator('[data-testid="model"][data-model="logreg"]')
            expect(model).to_contain_text("v7")
            expect(model).to_contain_text("deciding")
            expect(model.get_by_test_id("model-scored")).to_have_text("123,456")
            expect(model.get_by_test_id("model-labels")).to_contain_text("fraud 321")
            expect(model.get_by_test_id("model-auc")).to_have_text("0.934")
            expect(model.get_by_test_id("model-precision")).to_have_text("42.0 %")

            # While Ana looks at an alert, Bob claims it: the open alert follows (it has
            # left the open queue), and deciding it anyway shows the API's 409 message.
            queue_item(page, theirs).click()
            expect(page.get_by_test_id("detail-status")).to_contain_text("open")
            claimed = httpx.post(
                f"{service.url}/api/alerts/{theirs.alert_id}/claim",
                headers={"X-API-Key": BOB_KEY},
            )
            assert claimed.status_code == 200, claimed.text
            expect(page.get_by_test_id("detail-status")).to_contain_text("claimed by bob")
            expect(queue_item(page, theirs)).to_have_count(0)
            page.get_by_test_id("fraud-button").click()
            expect(page.get_by_test_id("message")).to_contain_text("bob")

            # The shortcuts are one key away; k moves up the queue to Ana's alert (the
            # higher score), which opens it: transaction, reasons, features, audit history.
            page.keyboard.press("?")
            expect(page.get_by_test_id("help-dialog")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.get_by_test_id("help-dialog")).to_be_hidden()
            page.keyboard.press("k")
            expect(queue_item(page, mine)).to_have_attribute("aria-current", "true")
            expect(page.get_by_test_id("transaction")).to_contain_text(
                mine.transaction.transaction_id
            )
            expect(page.get_by_test_id("reasons").locator("li").first).to_have_text(mine.reasons[0])
            expect(page.get_by_test_id("features")).to_contain_text("card_mean_amount_7d")
            expect(page.get_by_test_id("history")).to_contain_text("received")

            # Claim with the keyboard, write a note, then the verdict with the keyboard too.
            queue_item(page, mine).focus()
            page.keyboard.press("c")
            expect(page.get_by_test_id("detail-status")).to_contain_text("claimed by you")
            page.get_by_label("Note for the audit trail (optional)").fill("card holder called")
            page.keyboard.press("Escape")
            expect(page.get_by_test_id("fraud-button")).to_be_enabled()
            page.keyboard.press("f")
            expect(page.get_by_test_id("message")).to_contain_text("Marked fraud")
            # Nothing else is open, so the decided alert stays on screen, with its verdict.
            expect(page.get_by_test_id("detail-status")).to_contain_text("decided")
            expect(page.get_by_test_id("detail-status")).to_contain_text("fraud")
            expect(page.get_by_test_id("history")).to_contain_text("card holder called")

            if path := os.environ.get(SCREENSHOT_ENV):
                page.screenshot(path=path)
            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()

    labels = read_labels(settings, expected=1)
    assert [(x.transaction_id, x.card_id, x.label, x.source) for x in labels] == [
        (mine.transaction.transaction_id, "card-web-1", "fraud", "analyst")
    ]


def test_a_key_in_the_address_is_stored_and_removed(service: Service) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            violations = watch_csp(page)
            page.goto(f"{service.url}/?key={ANA_KEY}")
            expect(page.get_by_test_id("queue-stats")).to_contain_text("Open")
            assert "key=" not in page.url
            assert page.evaluate("localStorage.getItem('fraudstream.apiKey')") == ANA_KEY
            expect(page.get_by_test_id("key-dialog")).to_be_hidden()
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()
