"""The page in a real browser, against the real app and a real Kafka broker: an analyst
reports an allowed payment of a case as a missed fraud, an exploration alert looks like
any other, and the model card shows the unbiased sample's figures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from detector.settings import Settings
from tests.factories import model_status
from tests.integration.kafka_io import produce
from tests.integration.test_desk import payment, wait_for_alerts
from tests.integration.web_fixtures import (
    ANA_KEY,
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    read_labels,
    serve,
    watch_csp,
)

pytestmark = pytest.mark.integration

CARD = "card-5150"


@pytest.fixture
def service(unique_topics: Settings, tmp_path: Path) -> Iterator[Service]:
    with serve(unique_topics, tmp_path) as running:
        yield running


def publish(service: Service) -> tuple[str, str]:
    """A card's payments: two allowed, one allowed and explored, one reviewed; and the
    model's status with the sample's figures. Returns the explored and an allowed id."""
    pays = [
        payment(CARD, 1, hours_ago=20, amount=35.0, score=0.04, terminal="grocer-1"),
        payment(CARD, 2, hours_ago=6, amount=610.0, score=0.08, terminal="web-77"),
        payment(CARD, 3, hours_ago=3, amount=22.0, score=0.03, terminal="grocer-1"),
        payment(
            CARD,
            4,
            hours_ago=1,
            amount=900.0,
            score=0.7,
            terminal="web-78",
            reasons=("amount 25.7x this card's 30-day average (35.00)",),
        ),
    ]
    explored = pays[2]
    decision = explored.decision.model_copy(update={"exploration": True})
    alert = payment(CARD, 3, hours_ago=3, amount=22.0, score=0.7, terminal="grocer-1").alert
    assert alert is not None
    alert = alert.model_copy(update={"score": 0.03, "exploration": True, "reasons": ["score 0.03"]})
    kafka = service.settings.kafka
    decisions = [p.decision for p in pays]
    decisions[2] = decision
    produce(
        service.settings,
        kafka.topic_decisions,
        [(CARD, d.model_dump_json().encode()) for d in decisions],
    )
    alerts = [alert] + [p.alert for p in pays if p.alert]
    produce(
        service.settings, kafka.topic_alerts, [(CARD, a.model_dump_json().encode()) for a in alerts]
    )
    quality = {
        "window": 160,
        "frauds": 31,
        "auc": 0.9,
        "alert_precision": 0.75,
        "alerts": 40,
        "by_origin": {
            "alerted": {
                "labels": 40,
                "frauds": 30,
                "alerts": 40,
                "auc": None,
                "alert_precision": 0.75,
            },
            "exploration": {
                "labels": 120,
                "frauds": 1,
                "alerts": 0,
                "auc": None,
                "alert_precision": None,
            },
        },
        "min_exploration": 100,
        "exploration_share": 0.002,
        "allowed_fraud_rate": 1 / 120,
        "estimated_recall": 0.42,
    }
    status = model_status("logreg", quality=quality, emitted_at=datetime.now(UTC))
    produce(
        service.settings, kafka.topic_model_status, [("logreg", status.model_dump_json().encode())]
    )
    return explored.decision.transaction_id, pays[1].decision.transaction_id


def test_an_analyst_reports_a_missed_fraud_from_the_case(service: Service) -> None:
    explored, missed = publish(service)
    wait_for_alerts(service, expected=2)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            page.goto(f"{service.url}/?key={ANA_KEY}")

            # The model card: the sample's verdicts and the whole-traffic estimates.
            model = page.get_by_test_id("model")
            expect(model.get_by_test_id("model-sample")).to_have_text("120 labels, 1 fraud")
            expect(model.get_by_test_id("model-allowed-fraud")).to_have_text("0.8 %")
            expect(model.get_by_test_id("model-estimated-recall")).to_have_text("42.0 %")
            expect(model.get_by_test_id("model-estimated-recall-basis")).to_contain_text(
                "of all frauds (estimated from 120 sample labels)"
            )

            page.locator(f'[data-testid="case-item"][data-card-id="{CARD}"]').click()
            expect(page.get_by_test_id("case")).to_be_visible()
            expect(page.get_by_test_id("case-alert")).to_have_count(2)
            # Nothing tells the explored alert apart from the reviewed one.
            assert "xplor" not in page.get_by_test_id("case").inner_text()

            page.locator(".timeline-table summary").click()
            table = page.get_by_test_id("timeline-table")
            # Payments with an alert are decided through it: no report there.
            for alerted in (explored, f"{CARD}-tx4"):
                row = table.locator(f'tr[data-transaction-id="{alerted}"]')
                expect(row.get_by_test_id("report-fraud")).to_have_count(0)
            expect(table.get_by_test_id("report-fraud")).to_have_count(2)

            row = table.locator(f'tr[data-transaction-id="{missed}"]')
            row.get_by_test_id("report-fraud").click()
            row.get_by_test_id("report-note").fill("card holder disputes it")
            row.get_by_test_id("report-send").click()
            expect(page.get_by_test_id("message")).to_contain_text(f"Reported {missed} as fraud.")
            note = page.get_by_test_id("case-note")
            expect(note).to_have_count(1)
            expect(note).to_contain_text(
                f"Reported transaction {missed} (allow) as fraud: card holder disputes it"
            )
            expect(note).to_contain_text("ana")
            # The case is drawn again; the payment stays marked reported.
            page.locator(".timeline-table summary").click()
            row = page.get_by_test_id("timeline-table").locator(
                f'tr[data-transaction-id="{missed}"]'
            )
            expect(row.get_by_test_id("reported")).to_be_visible()
            expect(row.get_by_test_id("report-fraud")).to_have_count(0)

            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()

    [label] = read_labels(service.settings, 1)
    assert (label.transaction_id, label.card_id, label.label) == (missed, CARD, "fraud")
    assert (label.source, label.origin) == ("analyst", "reported")
