"""The models panel in a real browser: figures only over enough labels, with the labels
behind them, and the quality trend with its gaps.

Two statuses go onto the model-status topic of a real broker: one whose figures are null
below the minimum (as the detector publishes them), one with figures; the page (Debian's
Chromium driven by Playwright) says "too few labels" for the first and shows the sample
size and sources next to every figure of the second, with an SVG sparkline of the trend.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from detector.contracts import ModelStatus
from tests.factories import model_status
from tests.integration.kafka_io import produce
from tests.integration.test_web import (  # noqa: F401  (service is a fixture)
    ANA_KEY,
    SCREENSHOT_ENV,
    TIMEOUT_MS,
    Service,
    assert_csp_is_enforced,
    chromium_path,
    service,
    watch_csp,
)

pytestmark = pytest.mark.integration


def point(minutes_ago: int, **figures: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    base = {"window": 60, "frauds": 30, "legit": 30, "alerts": 30, "auc": None}
    return {"at": at, "alert_precision": None, "alert_recall": None} | base | figures


def status(name: str, quality: dict[str, Any], trend: list[dict[str, Any]]) -> ModelStatus:
    return model_status(
        name,
        model_version="v8",
        deciding=name == "young",
        labels_learned={"fraud": 12, "legit": 40},
        labels_by_source={"analyst": 52},
        quality=quality,
        trend=trend,
        emitted_at=datetime.now(UTC),
    )


YOUNG = status(
    "young",
    {
        "window": 52,
        "frauds": 12,
        "legit": 40,
        "alerts": 1,
        "sources": {"analyst": 52},
        "min_frauds": 30,
        "min_legit": 30,
        "min_alerts": 30,
        "auc": None,
        "average_precision": None,
        "alert_precision": None,
        "alert_recall": None,
    },
    [point(10, window=20, frauds=5, legit=15), point(5, window=52, frauds=12, legit=40)],
)
GROWN = status(
    "grown",
    {
        "window": 4000,
        "frauds": 120,
        "legit": 3880,
        "alerts": 200,
        "sources": {"chargeback": 3000, "analyst": 1000},
        "min_frauds": 30,
        "min_legit": 30,
        "min_alerts": 30,
        "auc": 0.912,
        "average_precision": 0.5,
        "alert_precision": 0.99996,
        "alert_recall": 0.4,
    },
    [
        point(30, auc=0.8, alert_precision=0.5),
        point(25),  # too few labels then: a gap
        point(20, auc=0.9, alert_precision=0.6),
        point(15, auc=0.91, alert_precision=0.7),
    ],
)


def test_the_model_card_is_honest_about_its_figures(service: Service) -> None:  # noqa: F811
    settings = service.settings
    produce(
        settings,
        settings.kafka.topic_model_status,
        [(s.model_name, s.model_dump_json().encode()) for s in (YOUNG, GROWN)],
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            violations = watch_csp(page)
            page.goto(f"{service.url}/?key={ANA_KEY}")

            young = page.locator('[data-testid="model"][data-model="young"]')
            expect(young.get_by_test_id("model-auc")).to_have_text(
                "too few labels (12 frauds, 40 legit; needs 30 and 30)"
            )
            expect(young.get_by_test_id("model-precision")).to_have_text(
                "too few labelled alerts (1; needs 30)"
            )
            expect(young.get_by_test_id("model-recall")).to_have_text(
                "too few labels (12 frauds; needs 30)"
            )
            expect(young.get_by_test_id("model-auc-basis")).to_have_count(0)
            expect(young.get_by_test_id("model-window")).to_have_text(
                "52 labelled: 12 frauds, 40 legit, 1 alert · from analyst 52"
            )
            # two points, both below the minimum: the chart has no line yet
            expect(young.get_by_test_id("model-trend")).to_have_attribute("data-points", "2")
            expect(young.get_by_test_id("model-trend-auc")).to_have_attribute("d", "")

            grown = page.locator('[data-testid="model"][data-model="grown"]')
            expect(grown.get_by_test_id("model-auc")).to_have_text("0.912")
            expect(grown.get_by_test_id("model-auc-basis")).to_have_text(
                " on 120 frauds, 3,880 legit"
            )
            # 0.99996 never reads 100.0 %
            expect(grown.get_by_test_id("model-precision")).to_have_text("99.9 %")
            expect(grown.get_by_test_id("model-precision-basis")).to_have_text(
                " of 200 labelled alerts"
            )
            expect(grown.get_by_test_id("model-recall-basis")).to_have_text(" of 120 frauds")
            expect(grown.get_by_test_id("model-window")).to_contain_text(
                "from chargeback 3,000, analyst 1,000"
            )
            trend = grown.get_by_test_id("model-trend")
            expect(trend).to_have_attribute("data-points", "4")
            auc = grown.get_by_test_id("model-trend-auc").get_attribute("d") or ""
            # the gap at the second point: the line starts again after it
            assert auc.count("M") == 2 and auc.count("L") == 1, auc
            assert "gaps where labels were too few" in (trend.get_attribute("aria-label") or "")
            if path := os.environ.get(SCREENSHOT_ENV):
                page.locator("#models").screenshot(path=path)
            assert not errors, errors
            assert_csp_is_enforced(page, violations)
        finally:
            browser.close()
