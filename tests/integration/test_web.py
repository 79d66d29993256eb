"""The analysts' page in a real browser, against the real app and a real Kafka broker.

An alert and a model status go onto the topics; the page (Debian's Chromium driven by
Playwright) shows them; an analyst claims and decides the alert; the verdict comes out of
the labels topic as a ``Label`` the detector can learn from.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer
from playwright.sync_api import ConsoleMessage, Locator, Page, expect, sync_playwright
from pydantic import SecretStr

from api.main import create_app
from detector.contracts import (
    Alert,
    Label,
    ModelStatus,
    Transaction,
    alert_id_for,
)
from detector.local.broker_config import find_free_ports
from detector.settings import Settings
from tests.factories import model_status, settings_with
from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

ANA_KEY = "ana-" + uuid.uuid4().hex
BOB_KEY = "bob-" + uuid.uuid4().hex
# Set to a file path to keep a screenshot of the page at the end of the test.
SCREENSHOT_ENV = "FRAUDSTREAM_WEB_SCREENSHOT"
TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Service:
    url: str
    settings: Settings


def chromium_path() -> str:
    """Debian's Chromium; Playwright's own browser download is never used."""
    path = shutil.which("chromium")
    if path:
        return path
    message = "chromium not found on PATH: the web test drives Debian's chromium package"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def service(unique_topics: Settings, tmp_path: os.PathLike[str]) -> Iterator[Service]:
    """The real app (Kafka bridge on) served by uvicorn in a thread on a free port."""
    settings = settings_with(
        unique_topics,
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path}/review.db",
        api_keys=SecretStr(f"analyst:ana:{ANA_KEY},analyst:bob:{BOB_KEY}"),
        outbox_interval_seconds=0.2,
    )
    port = find_free_ports(1)[0]
    config = uvicorn.Config(
        create_app(settings, kafka=True), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the app stopped while starting"
        assert time.monotonic() < deadline, "the app did not start within 60 s"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(30)


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


def read_labels(settings: Settings, expected: int, timeout: float = 30) -> list[Label]:
    """The first ``expected`` labels of the labels topic, waiting up to ``timeout``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topic_labels])
    labels: list[Label] = []
    deadline = time.monotonic() + timeout
    try:
        while len(labels) < expected and time.monotonic() < deadline:
            for message in consumer.consume(10, timeout=0.5):
                assert message.error() is None, message.error()
                labels.append(Label.model_validate_json(message.value()))
    finally:
        consumer.close()
    return labels


def watch_csp(page: Page) -> list[str]:
    """Content-Security-Policy violations of ``page``, as they happen.

    Both ways a browser reports them: the console line Chromium writes and the DOM's
    ``securitypolicyviolation`` event (which a listener added before any page script
    hears, and hands to Python through an exposed function).
    """
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Trusted Type" in message.text:
            violations.append(f"console: {message.text}")

    page.on("console", on_console)
    page.expose_function("reportCspViolation", lambda text: violations.append(str(text)))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "window.reportCspViolation(`event: ${e.effectiveDirective} blocked ${e.blockedURI} "
        "at ${e.sourceFile}:${e.lineNumber}`), true);"
    )
    return violations


def assert_csp_is_enforced(page: Page, violations: list[str]) -> None:
    """No violation so far; then a blocked image proves the policy and the watch work."""
    assert not violations, violations
    page.evaluate(
        "() => { const img = document.createElement('img');"
        " img.src = 'http://192.0.2.1/not-allowed.png'; document.body.append(img); }"
    )
    deadline = time.monotonic() + 10
    while not violations and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert any("img-src" in v and "192.0.2.1" in v for v in violations), violations


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
