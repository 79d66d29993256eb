"""The analyst's desk in a real browser, against the real app and a real Kafka broker: cases
in the queue, a case's timeline, alerts and notes, one verdict for a whole case, and a batch
verdict on cases picked with the keyboard.

Alerts and decisions go onto their topics as the detector would publish them (the detector
itself is not needed); the verdicts come out of the labels topic.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from detector.contracts import Alert, Decision, Transaction, alert_id_for
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


# Set to a file path to keep a screenshot of the desk with a case open.
SCREENSHOT_ENV = "FRAUDSTREAM_DESK_SCREENSHOT"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Payment:
    """One transaction of a card, its decision, and its alert if it had one."""

    decision: Decision
    alert: Alert | None


@pytest.fixture
def service(unique_topics: Settings, tmp_path: Path) -> Iterator[Service]:
    """The real app with two analysts' keys (ana and bob)."""
    with serve(unique_topics, tmp_path) as running:
        yield running


def payment(
    card: str,
    n: int,
    *,
    hours_ago: float,
    amount: float,
    score: float,
    terminal: str,
    reasons: tuple[str, ...] = (),
) -> Payment:
    at = NOW - timedelta(hours=hours_ago)
    decided = "block" if score >= 0.9 else "review" if score >= 0.6 else "allow"
    transaction = Transaction(
        transaction_id=f"{card}-tx{n}",
        timestamp=at,
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        currency="EUR",
        country="FR",
        channel="online",
    )
    decision = Decision(
        transaction_id=transaction.transaction_id,
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        score=score,
        decision=decided,
        reasons=list(reasons),
        model_name="logreg",
        model_version="v7",
        transaction_time=at,
        scored_at=at + timedelta(milliseconds=40),
    )
    if decided == "allow":
        return Payment(decision, None)
    alert = Alert(
        alert_id=alert_id_for(card, transaction.transaction_id),
        transaction=transaction,
        score=score,
        decision=decided,
        reasons=list(reasons),
        features={"amount": amount},
        model_name="logreg",
        model_version="v7",
        created_at=at + timedelta(seconds=1),
    )
    return Payment(decision, alert)


def the_card_at_risk(card: str) -> list[Payment]:
    """Two days of ordinary spending, one alert found legit, then a burst at new terminals."""
    ordinary = [
        (47.0, 38.2, "bakery-12"),
        (41.5, 64.9, "grocer-3"),
        (30.0, 12.5, "bakery-12"),
        (26.2, 83.0, "fuel-7"),
        (22.0, 29.9, "grocer-3"),
        (9.5, 55.4, "grocer-3"),
        (4.0, 18.0, "bakery-12"),
    ]
    pays = [
        payment(card, n, hours_ago=h, amount=a, score=0.02 + 0.03 * n, terminal=t)
        for n, (h, a, t) in enumerate(ordinary)
    ]
    burst = [
        (33.0, 310.0, 0.64, "electro-88", ("amount is 5x the card's 7-day average",)),
        (1.6, 420.0, 0.72, "web-shop-501", ("new terminal for this card", "amount 7x usual")),
        (1.2, 1840.0, 0.97, "web-shop-502", ("amount is 31x the card's 7-day average",)),
        (0.9, 960.0, 0.88, "web-shop-502", ("third new terminal within two hours",)),
    ]
    pays += [
        payment(card, 10 + n, hours_ago=h, amount=a, score=s, terminal=t, reasons=r)
        for n, (h, a, s, t, r) in enumerate(burst)
    ]
    return pays


def a_single_alert(card: str, score: float, amount: float) -> list[Payment]:
    reasons = ("night-time purchase at a terminal new to the card",)
    return [
        payment(card, 1, hours_ago=30, amount=25.0, score=0.05, terminal="grocer-9"),
        payment(
            card, 2, hours_ago=0.5, amount=amount, score=score, terminal="web-9", reasons=reasons
        ),
    ]


def publish(service: Service, payments: list[Payment]) -> None:
    kafka = service.settings.kafka
    decisions = [(p.decision.card_id, p.decision.model_dump_json().encode()) for p in payments]
    alerts = [
        (p.alert.transaction.card_id, p.alert.model_dump_json().encode())
        for p in payments
        if p.alert
    ]
    produce(service.settings, kafka.topic_decisions, decisions)
    produce(service.settings, kafka.topic_alerts, alerts)
    # The models panel beside the desk, as the detector reports it.
    status = model_status(
        "logreg",
        model_version="v7",
        transactions_scored=48_213,
        labels_learned={"fraud": 57, "legit": 2_904},
        quality={"window": 2_961, "frauds": 57, "auc": 0.941, "alert_precision": 0.38},
        emitted_at=datetime.now(UTC),
    )
    produce(
        service.settings, kafka.topic_model_status, [("logreg", status.model_dump_json().encode())]
    )


def case_item(page: Page, card: str) -> Locator:
    return page.locator(f'[data-testid="case-item"][data-card-id="{card}"]')


def post(service: Service, path: str, key: str, body: object = None) -> httpx.Response:
    response = httpx.post(f"{service.url}{path}", headers={"X-API-Key": key}, json=body)
    assert response.status_code < 300, (path, response.status_code, response.text)
    return response


def wait_for_alerts(service: Service, expected: int) -> None:
    """Until the API has stored ``expected`` alerts from the topic."""
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while datetime.now(UTC) < deadline:
        page = httpx.get(
            f"{service.url}/api/alerts", params={"limit": 100}, headers={"X-API-Key": ANA_KEY}
        ).json()
        if page["total"] >= expected:
            return
        time.sleep(0.2)
    pytest.fail(f"the API did not store {expected} alerts within 60 s")


def test_an_analyst_works_cases_on_the_desk(service: Service) -> None:
    # The topics and the database are this test's own: plain card ids cannot collide.
    risky, b, c, d = "card-4417", "card-0932", "card-2210", "card-7781"
    case = the_card_at_risk(risky)
    singles = {
        b: a_single_alert(b, 0.9, 240.0),
        c: a_single_alert(c, 0.85, 180.0),
        d: a_single_alert(d, 0.8, 99.0),
    }
    publish(service, case + [p for pays in singles.values() for p in pays])
    alerts = [p.alert for p in case if p.alert]
    wait_for_alerts(service, expected=len(alerts) + 3)
    # Bob had found the first alert of the card legit a day ago; now he holds d's alert.
    first, *burst = alerts
    post(service, f"/api/alerts/{first.alert_id}/claim", BOB_KEY)
    post(service, f"/api/alerts/{first.alert_id}/verdict", BOB_KEY, {"label": "legit"})
    held = next(p.alert for p in singles[d] if p.alert)
    post(service, f"/api/alerts/{held.alert_id}/claim", BOB_KEY)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            page.goto(f"{service.url}/?key={ANA_KEY}")

            # The queue lists open cases, highest score first.
            expect(page.get_by_test_id("view-cases")).to_be_checked()
            items = page.get_by_test_id("case-item")
            expect(items).to_have_count(4)
            assert [items.nth(i).get_attribute("data-card-id") for i in range(4)] == [
                risky,
                b,
                c,
                d,
            ]
            row = case_item(page, risky)
            expect(row).to_contain_text("0.97")
            expect(row).to_contain_text("3 open of 4 alerts")
            expect(row).to_contain_text("€3,220.00")  # at risk: the three open alerts
            expect(row.locator(".reason")).to_have_attribute("title", burst[1].reasons[0])
            expect(case_item(page, d)).to_contain_text("claimed by bob")

            # The search finds a case by a terminal of an allowed payment.
            page.get_by_test_id("filter-q").fill("fuel-7")
            expect(items).to_have_count(1)
            expect(case_item(page, risky)).to_be_visible()
            page.get_by_test_id("filter-q").fill("")
            expect(items).to_have_count(4)

            # The case: every payment of the card on the timeline, the alerts ringed, the
            # earlier verdict marked; the alerts listed; notes.
            row.click()
            expect(page.get_by_test_id("case")).to_be_visible()
            points = page.get_by_test_id("timeline-point")
            expect(points).to_have_count(len(case))
            expect(page.locator(".timeline .point.alerted")).to_have_count(len(alerts))
            expect(
                page.locator('[data-testid="timeline-point"][data-label="legit"]')
            ).to_have_count(1)
            expect(
                page.locator('[data-testid="timeline-point"][data-decision="block"]')
            ).to_have_count(1)
            case_alerts = page.get_by_test_id("case-alert")
            expect(case_alerts).to_have_count(len(alerts))
            page.get_by_test_id("case-note-input").fill(
                "card holder says the web shops are not theirs"
            )
            page.get_by_test_id("case-note-add").click()
            expect(page.get_by_test_id("case-note")).to_have_count(1)
            expect(page.get_by_test_id("case-note")).to_contain_text("not theirs")
            expect(page.get_by_test_id("case-note")).to_contain_text("ana")
            if path := os.environ.get(SCREENSHOT_ENV):
                page.screenshot(path=path)

            # One alert of the case opens below it, with the usual buttons.
            page.locator(
                f'[data-testid="case-alert"][data-alert-id="{burst[1].alert_id}"] button'
            ).click()
            expect(page.get_by_test_id("detail-summary")).to_contain_text(burst[1].alert_id)
            expect(page.get_by_test_id("claim-button")).to_be_enabled()

            # One verdict for the whole case decides its three open alerts.
            page.get_by_test_id("case-verdict-note").fill("account takeover")
            page.get_by_test_id("case-fraud").click()
            expect(page.get_by_test_id("case-results")).to_contain_text(
                "Marked fraud: 3 of 3 alerts."
            )
            expect(
                page.locator('[data-testid="timeline-point"][data-label="fraud"]')
            ).to_have_count(3)
            expect(case_item(page, risky)).to_have_count(0)  # no longer open

            # Keyboard: pick b, move down twice, pick the range to d; decide all at once.
            case_item(page, b).click()
            expect(page.get_by_test_id("case-summary")).to_contain_text(b)
            page.keyboard.press("x")
            page.keyboard.press("j")
            page.keyboard.press("j")
            expect(case_item(page, d)).to_have_attribute("aria-current", "true")
            page.keyboard.press("Shift+X")
            expect(page.get_by_test_id("bulk-count")).to_have_text(
                "3 cases selected (their open alerts)"
            )
            expect(page.locator(".queue-row.picked")).to_have_count(3)
            page.get_by_test_id("bulk-legit").click()
            results = page.get_by_test_id("bulk-results")
            expect(results).to_contain_text("Marked legit: 2 of 3 alerts; 1 failed:")
            failure = results.get_by_test_id("failure")
            expect(failure).to_have_count(1)
            expect(failure).to_contain_text(f"card {d}")
            expect(failure).to_contain_text("conflict")
            expect(failure).to_contain_text("claimed by bob")
            # Decided cases leave the open queue; the failed one stays, still picked.
            expect(case_item(page, b)).to_have_count(0)
            expect(case_item(page, c)).to_have_count(0)
            expect(page.get_by_test_id("bulk-count")).to_have_text(
                "1 case selected (their open alerts)"
            )
            page.keyboard.press("Escape")
            expect(page.get_by_test_id("bulk")).to_be_hidden()
            expect(page.locator(".queue-row.picked")).to_have_count(0)

            # The shortcuts are in the help.
            page.keyboard.press("?")
            expect(page.get_by_test_id("help-dialog")).to_contain_text("Select every row")
            page.keyboard.press("Escape")

            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()

    labels = read_labels(service.settings, expected=6)
    assert sorted((x.transaction_id, x.label, x.source) for x in labels) == sorted(
        [(first.transaction.transaction_id, "legit", "analyst")]
        + [(a.transaction.transaction_id, "fraud", "analyst") for a in burst]
        + [(f"{card}-tx2", "legit", "analyst") for card in (b, c)]
    )
    notes = httpx.get(f"{service.url}/api/cases/{risky}", headers={"X-API-Key": ANA_KEY}).json()
    assert [n["text"] for n in notes["notes"]] == ["card holder says the web shops are not theirs"]
