"""Admins see each model's version and checkpoints on the page, start a challenger, roll
one back and retire it; the changes reach the control topic (real app, real broker,
Chromium)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect, sync_playwright

from detector.contracts import CheckpointInfo, HyperParameters, ModelSpec
from tests.factories import model_status
from tests.integration.kafka_io import produce
from tests.integration.test_admin_web import read_controls
from tests.integration.test_policy_web import ADA_KEY, service
from tests.integration.test_web import TIMEOUT_MS, Service, chromium_path

pytestmark = pytest.mark.integration
__all__ = ["service"]  # the fixture: the real app, an admin (ada) and an analyst (ana)


def checkpoint(labels: int) -> CheckpointInfo:
    return CheckpointInfo(
        checkpoint_id=f"1-{labels}",
        saved_at=datetime(2026, 11, 26, tzinfo=UTC),
        labels_learned=labels,
        model_version="0.1.0+5d2f0a1c.1",
    )


def test_an_admin_starts_rolls_back_and_retires_models(service: Service) -> None:
    settings = service.settings
    logreg = model_status("logreg", model_version="0.1.0+aa11bb22.3")
    tree = model_status(
        "tree-fast",
        deciding=False,
        model_version="0.1.0+5d2f0a1c.1",
        spec=ModelSpec(name="tree-fast", kind="tree", params=HyperParameters(grace_period=20)),
        checkpoints=[checkpoint(1000), checkpoint(2000)],
    )
    produce(
        settings,
        settings.kafka.topic_model_status,
        [(s.model_name, s.model_dump_json().encode()) for s in (logreg, tree)],
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{service.url}/?key={ADA_KEY}")
            expect(page.get_by_test_id("admin")).to_be_visible()

            # Each model with its version, what it is, and its checkpoints.
            listed = page.get_by_test_id("admin-models")
            first = listed.locator('[data-model="logreg"]')
            second = listed.locator('[data-model="tree-fast"]')
            expect(first.get_by_test_id("admin-model-version")).to_have_text("0.1.0+aa11bb22.3")
            expect(first).to_contain_text("(deciding)")
            expect(first.get_by_test_id("admin-no-checkpoint")).to_be_visible()
            expect(first.get_by_test_id("admin-retire")).to_have_count(0)
            expect(second.get_by_test_id("admin-model-version")).to_have_text("0.1.0+5d2f0a1c.1")
            expect(second).to_contain_text("tree (grace_period 20")
            options = second.get_by_test_id("admin-checkpoint").locator("option")
            expect(options).to_have_count(2)
            expect(options.first).to_contain_text("1-2000: 2,000 labels")  # newest first

            # A bad challenger: the API's message, nothing sent.
            page.get_by_test_id("admin-model-name").fill("forest-small")
            page.get_by_test_id("admin-model-kind").select_option("forest")
            expect(page.get_by_test_id("admin-model-learning_rate")).to_be_hidden()
            page.get_by_test_id("admin-model-n_models").fill("500")
            page.get_by_test_id("admin-model-add").click()
            message = page.get_by_test_id("admin-message")
            expect(message).to_contain_text("refused")
            expect(message).to_contain_text("50")

            page.get_by_test_id("admin-model-n_models").fill("3")
            page.get_by_test_id("admin-model-seed").fill("7")
            page.get_by_test_id("admin-model-add").click()
            expect(message).to_contain_text("sent to the detector")

            second.get_by_test_id("admin-checkpoint").select_option("1-1000")
            second.get_by_test_id("admin-rollback").click()
            history = page.get_by_test_id("admin-history")
            expect(history).to_contain_text("tree-fast rolled back to 1-1000")

            page.get_by_test_id("admin-models").locator('[data-model="tree-fast"]').get_by_test_id(
                "admin-retire"
            ).click()
            expect(history).to_contain_text("model retired: tree-fast")
            expect(history).to_contain_text("challenger started: forest-small forest (n_models 3")
            expect(listed.locator('[data-model="tree-fast"]')).to_have_count(0)
            assert not errors, errors
        finally:
            browser.close()

    controls = read_controls(settings, 3)
    assert [c.action for c in controls] == ["add_model", "rollback_model", "retire_model"]
    assert controls[0].model_spec == ModelSpec(
        name="forest-small", kind="forest", params=HyperParameters(n_models=3, seed=7)
    )
    assert (controls[1].model_name, controls[1].checkpoint_id) == ("tree-fast", "1-1000")
    assert controls[2].model_name == "tree-fast" and controls[2].requested_by == "ada"
