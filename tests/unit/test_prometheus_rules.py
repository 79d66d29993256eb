"""The Prometheus configuration and rules: promtool's checks and unit tests
(deploy/prometheus/tests/*.yml), and what every alert must carry.

Without promtool these tests skip, or fail when CI is set (`make system` installs it).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from detector.settings import GROUPS
from tests.ops import (
    API_JOB,
    DETECTOR_JOB,
    PROMETHEUS_CONFIG,
    RULE_TESTS_DIR,
    alert_rules,
    load_rules,
    promtool,
    rule_files,
)

SETTING = re.compile(r"\bFRAUDSTREAM_[A-Z0-9_]+")


def rule_tests() -> list[dict[str, Any]]:
    """Every test case of every promtool test file."""
    cases = []
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            cases.append({**case, "file": path.name})
    return cases


def test_promtool_accepts_the_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_rules_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert files
    result = promtool("test", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested not firing"
    assert (firing | silent) - alerts == set(), "tests of alerts that do not exist"


def test_the_scrape_jobs_and_rule_files() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {DETECTOR_JOB, API_JOB}
    assert jobs[DETECTOR_JOB]["static_configs"][0]["targets"] == ["127.0.0.1:3030"]
    assert jobs[API_JOB]["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    for job in jobs.values():
        assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert config["rule_files"] == ["rules/*.yml"]


def test_alerts_carry_severity_and_a_runbook() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alert_rules():
        name = rule["alert"]
        assert name.startswith("Fraudstream"), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name} has no {key}"
        runbook = annotations["runbook"]
        for part in ("Means:", "Check:", "Do:"):
            assert part in runbook, f"{name}'s runbook lacks {part!r}"


def test_the_alerts_cover_the_operations_we_watch() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "FraudstreamConsumerLagGrowing",
        "FraudstreamNoTransactions",
        "FraudstreamDeadLetterRatioHigh",
        "FraudstreamAlertRateUnusual",
        "FraudstreamModelAucLow",
        "FraudstreamModelAucFalling",
        "FraudstreamAlertPrecisionLow",
        "FraudstreamModelStatusStale",
        "FraudstreamApiErrors",
        "FraudstreamApiSlow",
        "FraudstreamReviewQueueSlaBreached",
        "FraudstreamOutboxNotDraining",
    } <= names


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_recorded_names_follow_the_convention(rule: dict[str, Any]) -> None:
    if "record" in rule:
        level, _metric, operations = rule["record"].split(":")
        assert level == "fraudstream" and operations, rule["record"]


def test_runbooks_name_only_real_settings() -> None:
    for rule in alert_rules():
        text = " ".join(rule["annotations"].values())
        for variable in SETTING.findall(text):
            field = variable.removeprefix("FRAUDSTREAM_").lower()
            assert any(field in group.model_fields for group in GROUPS.values()), (
                f"{rule['alert']}: {variable}"
            )
