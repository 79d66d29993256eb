"""Rules, lists and safety valves end to end: admins' changes over HTTP reach the running
detector through the real broker and change its next decisions, and survive a restart."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from detector.contracts import (
    Control,
    DeadLetter,
    Decision,
    ModelStatus,
    PolicyStatus,
    Rule,
    Transaction,
)
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_api_kafka import ADMIN, review_settings

pytestmark = pytest.mark.slow

HEADERS = {"X-API-Key": ADMIN}
_ids = itertools.count()


def start_detector(settings: Settings, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return detector_process(
        settings,
        tmp_path,
        log,
        {
            "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "2",
            # The model alone allows everything: what is not allowed, the policy decided.
            "FRAUDSTREAM_THRESHOLD_MODE": "fixed",
            "FRAUDSTREAM_REVIEW_THRESHOLD": "1.0",
            "FRAUDSTREAM_BLOCK_THRESHOLD": "1.0",
            # At most 1 block in any 20 decisions.
            "FRAUDSTREAM_MAX_BLOCK_SHARE": "0.05",
            "FRAUDSTREAM_BLOCK_CAP_WINDOW": "20",
            # Twenty cards at one terminal in a moment is a burst: here only the policy
            # decides, so a burst is reported but does not send the terminal to review.
            "FRAUDSTREAM_BURST_REVIEW_MINUTES": "0",
        },
    )


def tx(card: str, amount: float) -> Transaction:
    return Transaction(
        transaction_id=f"p-{next(_ids)}",
        timestamp=datetime.now(UTC),
        card_id=card,
        terminal_id="term-1",
        amount=amount,
        country="FR",
    )


class Harness:
    def __init__(self, settings: Settings, client: TestClient, log: Path) -> None:
        self.settings, self.client, self.log = settings, client, log
        self.proc: subprocess.Popen[bytes] | None = None

    def decide(self, *txs: Transaction) -> list[Decision]:
        """Send ``txs`` and wait for their decisions."""
        settings = self.settings
        topic = settings.kafka.topic_transactions
        produce(settings, topic, [(t.card_id, t.model_dump_json().encode()) for t in txs])
        wanted = {t.transaction_id for t in txs}

        def decided() -> dict[str, Decision]:
            values = consume_all(settings, settings.kafka.topic_decisions)
            got = {d.transaction_id: d for d in map(Decision.model_validate_json, values)}
            return got if wanted <= set(got) else {}

        assert self.proc is not None
        got = wait_until("the decisions", decided, self.proc, self.log)
        return [got[t.transaction_id] for t in txs]

    def change(self, method: str, path: str, body: dict[str, Any] | None = None) -> str:
        """Make an admin's change over HTTP; wait until the detector reports it applied."""
        response = self.client.request(method, path, json=body, headers=HEADERS)
        assert response.status_code == 202, response.text
        control_id = response.json()["control_id"]
        assert self.proc is not None
        wait_until("the change applied", self.applied(control_id), self.proc, self.log)
        return str(control_id)

    def applied(self, control_id: str) -> Callable[[], PolicyStatus | None]:
        def check() -> PolicyStatus | None:
            for info in self.client.get("/api/models", headers=HEADERS).json():
                status = ModelStatus.model_validate(info["status"], strict=False)
                if status.deciding and status.last_control_id == control_id:
                    return status.policy
            return None

        return check

    def policy(self) -> PolicyStatus:
        for info in self.client.get("/api/models", headers=HEADERS).json():
            status = ModelStatus.model_validate(info["status"], strict=False)
            if status.deciding and status.policy is not None:
                return status.policy
        raise AssertionError("no policy in the models' status")


@pytest.fixture
def harness(unique_topics: Settings, tmp_path: Path) -> Iterator[Harness]:
    app = create_app(review_settings(unique_topics, tmp_path))
    log = tmp_path / "detector.log"
    with TestClient(app) as client:
        h = Harness(unique_topics, client, log)
        h.proc = start_detector(unique_topics, tmp_path, log)
        try:
            yield h
        finally:
            h.proc.terminate()
            h.proc.wait(30)


def test_rules_lists_and_valves_change_the_running_detectors_decisions(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    assert {d.decision for d in h.decide(*(tx(f"card-{i}", 20.0 + i) for i in range(20)))} == {
        "allow"
    }

    # A rule added over HTTP changes the next decision.
    started = time.monotonic()
    h.change(
        "PUT",
        "/api/rules/odd-amount",
        {"expression": "amount == 4321.0 && country == 'FR'", "outcome": "review"},
    )
    assert time.monotonic() - started < 15
    [hit, miss] = h.decide(tx("card-1", 4321.0), tx("card-1", 4320.0))
    assert hit.decision == "review" and hit.reasons[0] == "rule odd-amount: review"
    assert miss.decision == "allow"
    assert [(r.rule.name, r.hits) for r in h.policy().rules] == [("odd-amount", 1)]

    # A block-list entry blocks, and stops blocking once it expires.
    until = datetime.now(UTC) + timedelta(seconds=20)
    h.change(
        "PUT",
        "/api/lists/block.card_id/card-bad",
        {"expires_at": until.isoformat(), "note": "chargeback ring"},
    )
    [blocked] = h.decide(tx("card-bad", 30.0))
    assert blocked.decision == "block"
    assert blocked.reasons[0].startswith("on block list: card card-bad (until ")
    assert blocked.reasons[0].endswith(", chargeback ring)")
    assert h.policy().list_sizes["block.card_id"] == 1
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
    [after] = h.decide(tx("card-bad", 30.0))
    assert after.decision == "allow", after.reasons

    # Review-only mode turns would-be blocks into reviews.
    h.change("PUT", "/api/rules/huge", {"expression": "amount >= 9000.0", "outcome": "block"})
    h.change("PUT", "/api/mode", {"mode": "review_only"})
    [reviewed] = h.decide(tx("card-2", 9999.0))
    assert reviewed.decision == "review"
    assert reviewed.reasons[0] == "rule huge: block"
    assert "review-only mode: would have blocked" in reviewed.reasons
    # Monitor mode allows everything and says what would have happened.
    h.change("PUT", "/api/mode", {"mode": "monitor"})
    [monitored] = h.decide(tx("card-2", 9998.0))
    assert monitored.decision == "allow"
    assert "monitor mode: would have blocked" in monitored.reasons
    h.change("PUT", "/api/mode", {"mode": "normal"})

    # The block cap: at most 1 block in any 20 decisions; the other would-be blocks are
    # reviewed, with a reason, and the status says the cap tripped.
    huge = h.decide(*(tx(f"card-{i}", 9000.0 + i) for i in range(10)))
    assert [d.decision for d in huge].count("block") <= 1
    capped = [d for d in huge if d.decision == "review"]
    assert len(capped) >= 9
    assert all(any(r.startswith("blocks capped: ") for r in d.reasons) for d in capped)

    def tripped() -> PolicyStatus | None:
        p = h.policy()
        return p if p.block_cap_tripped and p.blocks_capped >= len(capped) else None

    assert h.proc is not None
    wait_until("the block cap in the status", tripped, h.proc, h.log)

    # A control with a broken rule, sent straight to the topic, is dead-lettered.
    bad = Control(
        control_id="bad-rule",
        action="put_rule",
        rule=Rule(
            name="broken",
            expression="amount >",
            outcome="block",
            changed_by="script",
            changed_at=datetime.now(UTC),
        ),
        requested_by="script",
        requested_at=datetime.now(UTC),
    )
    produce(h.settings, h.settings.kafka.topic_control, [("model", bad.model_dump_json().encode())])

    def dead_letter() -> list[DeadLetter]:
        values = consume_all(h.settings, h.settings.kafka.topic_dead_letters)
        return [d for d in map(DeadLetter.model_validate_json, values) if b"bad-rule" in d.value]

    [dead] = wait_until("the broken rule dead-lettered", dead_letter, h.proc, h.log)
    assert dead.reason == "invalid" and "Syntax error" in dead.error
    assert dead.source_topic == h.settings.kafka.topic_control
    assert [r.rule.name for r in h.policy().rules] == ["huge", "odd-amount"]

    # Rules and lists survive a restart of the detector.
    h.proc.terminate()
    h.proc.wait(30)
    h.proc = start_detector(h.settings, tmp_path, h.log)
    [again] = h.decide(tx("card-3", 4321.0))
    assert again.decision == "review" and again.reasons[0] == "rule odd-amount: review"
