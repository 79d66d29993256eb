"""The page shows admins the mode, the rules (with their hits) and the lists, and lets them
change them; analysts do not see it, but see the safety valves on the model's card."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright
from pydantic import SecretStr

from api.main import create_app
from detector.contracts import PolicyStatus, Rule, RuleStatus
from detector.local.broker_config import find_free_ports
from detector.settings import Settings
from tests.factories import model_status, settings_with
from tests.integration.kafka_io import produce
from tests.integration.test_web import (
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    watch_csp,
)

ADA_KEY = "ada-" + uuid.uuid4().hex
ANA_KEY = "ana-" + uuid.uuid4().hex


@pytest.fixture
def service(unique_topics: Settings, tmp_path: os.PathLike[str]) -> Iterator[Service]:
    settings = settings_with(
        unique_topics,
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path}/review.db",
        api_keys=SecretStr(f"admin:ada:{ADA_KEY},analyst:ana:{ANA_KEY}"),
        outbox_interval_seconds=0.2,
    )
    port = find_free_ports(1)[0]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(30)


def test_an_admin_sees_and_changes_rules_lists_and_mode(service: Service) -> None:
    settings = service.settings
    # The detector's view (hits, block cap) arrives with the deciding model's status.
    rule = Rule(
        name="big",
        expression="amount > 2000.0",
        outcome="block",
        changed_by="ada",
        changed_at=model_status("logreg").emitted_at,
    )
    policy = PolicyStatus(
        mode="normal",
        rules=[RuleStatus(rule=rule, hits=42, errors=1)],
        list_sizes={},
        list_hits={},
        max_block_share=0.01,
        block_window=1000,
        block_share=0.012,
        block_cap_tripped=True,
        blocks_capped=7,
        degraded=3,
    )
    status = model_status("logreg").model_copy(update={"policy": policy})
    produce(
        settings, settings.kafka.topic_model_status, [("logreg", status.model_dump_json().encode())]
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)

            # An analyst does not see the section, but sees the safety valves on the
            # deciding model's card.
            page.goto(f"{service.url}/?key={ANA_KEY}")
            expect(page.get_by_test_id("me")).to_have_text("ana · analyst")
            page.wait_for_timeout(1000)
            expect(page.get_by_test_id("policy")).to_be_hidden()
            expect(page.get_by_test_id("model-mode")).to_have_text("normal")
            expect(page.get_by_test_id("model-block-cap")).to_have_text(
                "1.2 % of the last 1,000 decisions blocked, cap 1.0 %: tripped, blocks become"
                " reviews"
            )
            expect(page.get_by_test_id("model-degraded")).to_have_text("3 decided by rules alone")

            page.evaluate("() => localStorage.clear()")
            page.goto(f"{service.url}/?key={ADA_KEY}")
            section = page.get_by_test_id("policy")
            expect(section).to_be_visible()
            expect(page.get_by_test_id("policy-cap-tripped")).to_have_text("yes")
            expect(page.get_by_test_id("policy-degraded")).to_have_text("3")

            # A wrong expression: the API's message, nothing added.
            page.get_by_test_id("policy-rule-name").fill("big")
            page.get_by_test_id("policy-rule-expression").fill("amount > 2000.0 &&")
            page.get_by_test_id("policy-rule-outcome").select_option("block")
            page.get_by_test_id("policy-rule-save").click()
            expect(page.get_by_test_id("policy-message")).to_contain_text("invalid expression")
            expect(page.get_by_test_id("policy-rule")).to_have_count(0)

            page.get_by_test_id("policy-rule-expression").fill("amount > 2000.0")
            page.get_by_test_id("policy-rule-mode").select_option("active")
            page.get_by_test_id("policy-rule-save").click()
            listed = page.locator('[data-testid="policy-rule"][data-rule="big"]')
            expect(listed).to_contain_text("amount > 2000.0")
            expect(listed).to_contain_text("hits 42, errors 1")

            page.get_by_test_id("policy-entry-list").select_option("block.card_id")
            page.get_by_test_id("policy-entry-value").fill("card-17")
            page.get_by_test_id("policy-entry-save").click()
            expect(page.get_by_test_id("policy-entry")).to_contain_text("block.card_id card-17")

            page.get_by_test_id("policy-mode").select_option("review_only")
            page.get_by_test_id("policy-mode-set").click()
            expect(page.get_by_test_id("policy-mode-now")).to_have_text("review_only")

            history = httpx.get(
                f"{service.url}/api/control/history", headers={"X-API-Key": ADA_KEY}
            ).json()
            assert [e["action"] for e in history] == ["set_mode", "put_list_entry", "put_rule"]
            assert {e["actor"] for e in history} == {"ada"}

            page.get_by_test_id("policy-rule-delete").click()
            expect(page.get_by_test_id("policy-rule")).to_have_count(0)
            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()
