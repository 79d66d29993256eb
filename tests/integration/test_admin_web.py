"""Admins change the thresholds and the deciding model from the page; both show in the
change history and reach the control topic (real app, real broker, Chromium). A viewer
sees no admin controls."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer
from playwright.sync_api import expect, sync_playwright

from detector.contracts import Control
from detector.settings import Settings
from tests.factories import model_status
from tests.integration.kafka_io import produce
from tests.integration.test_policy_web import ADA_KEY, ANA_KEY, service
from tests.integration.test_web import TIMEOUT_MS, Service, chromium_path

pytestmark = pytest.mark.integration
__all__ = ["service"]  # the fixture: the real app, an admin (ada) and an analyst (ana)


def read_controls(settings: Settings, expected: int, timeout: float = 30) -> list[Control]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topic_control])
    controls: list[Control] = []
    try:
        for _ in range(int(timeout / 0.5)):
            if len(controls) >= expected:
                break
            for message in consumer.consume(10, timeout=0.5):
                assert message.error() is None, message.error()
                controls.append(Control.model_validate_json(message.value()))
    finally:
        consumer.close()
    return controls


def test_an_admin_changes_thresholds_and_the_deciding_model(service: Service) -> None:
    settings = service.settings
    produce(
        settings,
        settings.kafka.topic_model_status,
        [
            ("logreg", model_status("logreg").model_dump_json().encode()),
            ("forest", model_status("forest", deciding=False).model_dump_json().encode()),
        ],
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # An analyst sees no admin controls.
            page.goto(f"{service.url}/?key={ANA_KEY}")
            expect(page.get_by_test_id("me")).to_have_text("ana · analyst")
            expect(page.locator('[data-testid="model"][data-model="forest"]')).to_be_visible()
            page.wait_for_timeout(1500)
            expect(page.get_by_test_id("admin")).to_be_hidden()
            expect(page.get_by_test_id("admin-make-deciding")).to_have_count(0)

            page.evaluate("() => localStorage.clear()")
            page.goto(f"{service.url}/?key={ADA_KEY}")
            expect(page.get_by_test_id("admin")).to_be_visible()
            in_force = page.get_by_test_id("admin-thresholds-now")
            expect(in_force).to_contain_text("volume: review 1.0 %")

            # A bad change: the API's message.
            page.get_by_test_id("admin-mode").select_option("fixed")
            page.get_by_test_id("admin-review_threshold").fill("0.9")
            page.get_by_test_id("admin-block_threshold").fill("0.5")
            page.get_by_test_id("admin-thresholds-set").click()
            expect(page.get_by_test_id("admin-message")).to_contain_text("refused")

            page.get_by_test_id("admin-block_threshold").fill("0.97")
            page.get_by_test_id("admin-thresholds-set").click()
            expect(page.get_by_test_id("admin-message")).to_contain_text("sent to the detector")

            forest = page.locator('[data-testid="model"][data-model="forest"]')
            forest.get_by_test_id("admin-make-deciding").click()
            history = page.get_by_test_id("admin-history")
            expect(history).to_contain_text("deciding model → forest")
            expect(history).to_contain_text("review_threshold 0.9")
            expect(history.get_by_test_id("admin-history-item")).to_have_count(2)
            expect(history).to_contain_text("ada")
            assert not errors, errors
        finally:
            browser.close()

    controls = read_controls(settings, 2)
    assert [c.action for c in controls] == ["set_thresholds", "set_deciding_model"]
    assert controls[0].thresholds is not None
    assert controls[0].thresholds.review_threshold == 0.9
    assert controls[0].thresholds.block_threshold == 0.97
    assert controls[1].model_name == "forest" and controls[1].requested_by == "ada"
