"""Rules, lists and safety valves: precedence, expiry, reasons, errors and the valves."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from detector.contracts import Control, ListEntry, RejectReason, Rule, Transaction
from detector.core import ScoringCore
from detector.expressions import ExpressionError, check_expression
from detector.items import ControlApplied, Rejected
from detector.metrics import DetectorMetrics
from detector.policy import Policy
from detector.scoring import ensure_models
from detector.settings import ScoringSettings
from models import HybridScore, HybridScorer
from tests.unit.test_scoring import background

NOW = datetime.now(UTC)
T0 = NOW.timestamp()


def transaction(
    tx_id: str = "t1",
    *,
    card: str = "card-17",
    terminal: str = "term-1",
    amount: float = 50.0,
    country: str | None = "FR",
    device: str | None = None,
) -> Transaction:
    return Transaction(
        transaction_id=tx_id,
        timestamp=NOW,
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        country=country,
        device_id=device,
    )


def control(action: str, control_id: str = "c-1", **fields: Any) -> Control:
    return Control(
        control_id=control_id, action=action, requested_by="ada", requested_at=NOW, **fields
    )


def rule(name: str, expression: str, outcome: str = "block", **fields: Any) -> Control:
    r = Rule(
        name=name,
        expression=expression,
        outcome=outcome,
        changed_by="ada",
        changed_at=NOW,
        **fields,
    )
    return control("put_rule", rule=r)


def entry(list_name: str, value: str, **fields: Any) -> Control:
    e = ListEntry(list_name=list_name, value=value, changed_by="ada", changed_at=NOW, **fields)
    return control("put_list_entry", list_entry=e)


FEATURES = {"card_new_terminal": 1.0, "card_tx_1h": 0.0}


def test_precedence_allow_list_then_block_list_then_rules_then_model() -> None:
    policy = Policy()
    tx = transaction(amount=2500.0)
    assert policy.decide(tx, FEATURES, "review", now=T0).decision == "review"  # the model
    policy.apply(rule("big-new-terminal", "amount > 2000.0 && card_new_terminal == 1.0"))
    out = policy.decide(tx, FEATURES, "allow", now=T0)
    assert (out.decision, out.reasons) == ("block", ["rule big-new-terminal: block"])
    policy.apply(entry("block.terminal_id", "term-1", note="skimmer"))
    policy.apply(rule("small-allow", "amount > 1.0", outcome="allow"))
    out = policy.decide(tx, FEATURES, "allow", now=T0)
    assert (out.decision, out.reasons) == ("block", ["on block list: terminal term-1 (skimmer)"])
    policy.apply(entry("allow.country", "FR"))
    out = policy.decide(tx, FEATURES, "block", now=T0)
    assert (out.decision, out.reasons, out.list_hit) == (
        "allow",
        ["on allow list: country FR"],
        "allow.country",
    )
    assert policy.list_hits == {"block.terminal_id": 1, "allow.country": 1}
    # Rules count what they match even where a list decided.
    assert policy.rule_hits == {"big-new-terminal": 3, "small-allow": 2}


def test_the_strictest_matching_rule_decides_and_shadow_rules_only_count() -> None:
    policy = Policy()
    policy.apply(rule("a-review", "amount > 100.0", outcome="review"))
    policy.apply(rule("b-block", "amount > 1000.0", outcome="block"))
    policy.apply(rule("c-shadow", "country == 'FR'", outcome="block", mode="shadow"))
    out = policy.decide(transaction(amount=5000.0), FEATURES, "allow", now=T0)
    assert out.decision == "block" and out.reasons == ["rule b-block: block"]
    assert sorted(out.rule_hits) == [
        ("a-review", "active"),
        ("b-block", "active"),
        ("c-shadow", "shadow"),
    ]
    out = policy.decide(transaction(amount=500.0), FEATURES, "allow", now=T0)
    assert out.decision == "review"
    out = policy.decide(transaction(amount=5.0), FEATURES, "allow", now=T0)
    assert (out.decision, out.reasons, out.rule_hits) == ("allow", [], [("c-shadow", "shadow")])
    assert policy.rule_hits == {"a-review": 2, "b-block": 1, "c-shadow": 3}
    policy.apply(control("delete_rule", rule_name="a-review"))
    assert policy.rule_hits == {"b-block": 1, "c-shadow": 3}  # no counts of rules gone
    assert [r.rule.name for r in policy.status().rules] == ["b-block", "c-shadow"]
    policy.apply(rule("c-shadow", "country == 'FR'", mode="active"))  # same expression
    policy.apply(rule("b-block", "amount > 2000.0"))  # a new expression counts anew
    assert policy.rule_hits == {"c-shadow": 3}


def test_missing_fields_are_null_and_expiry_stops_an_entry_at_once() -> None:
    policy = Policy()
    until = NOW + timedelta(seconds=60)
    policy.apply(entry("block.card_id", "card-17", expires_at=until, note="chargeback ring"))
    policy.apply(rule("no-device", "device_id == null && amount > 10.0", outcome="review"))
    out = policy.decide(transaction(), FEATURES, "allow", now=T0)
    assert out.decision == "block"
    assert out.reasons[0].startswith("on block list: card card-17 (until ")
    assert out.reasons[0].endswith(", chargeback ring)")
    out = policy.decide(transaction(), FEATURES, "allow", now=until.timestamp())
    assert out.decision == "review" and out.reasons == ["rule no-device: review"]
    assert policy.lists["block.card_id"] == {}  # purged
    assert policy.status().list_sizes["block.card_id"] == 0


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("amount > 2000.0 &&", ":1:19: Syntax error"),
        ("amout > 3.0", "unknown variable amout"),
        ("metadata.x == 'y'", "unknown variable metadata"),
    ],
)
def test_an_invalid_expression_is_refused_with_where(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        check_expression(expression)


def test_an_invalid_rule_control_is_rejected_and_changes_nothing() -> None:
    core = ScoringCore()
    assert isinstance(core.apply(rule("good", "amount > 1.0")), ControlApplied)
    out = core.apply(rule("good", "amount >"))
    assert isinstance(out, Rejected) and out.reason is RejectReason.INVALID and out.control
    assert "Syntax error" in out.error
    assert core.model.policy.rules["good"].expression == "amount > 1.0"


def test_a_rule_that_fails_at_run_time_is_not_matched_counted_and_logged_once() -> None:
    policy = Policy()
    policy.apply(rule("bad-type", "amount + 1 > 3.0"))  # double + int: a run-time error
    policy.apply(rule("not-bool", "amount", outcome="review"))
    with capture_logs() as logged:
        for i in range(3):
            out = policy.decide(transaction(f"t{i}"), FEATURES, "allow", now=T0)
            assert out.decision == "allow"
            assert sorted(out.rule_errors) == ["bad-type", "not-bool"]
    assert policy.rule_errors == {"bad-type": 3, "not-bool": 3}
    assert sorted(e["rule"] for e in logged if e["event"] == "rule failed") == [
        "bad-type",
        "not-bool",
    ]


def test_review_only_and_monitor_modes() -> None:
    policy = Policy()
    policy.apply(rule("block-big", "amount > 1000.0"))
    big = transaction(amount=5000.0)
    policy.apply(control("set_mode", mode="review_only"))
    out = policy.decide(big, FEATURES, "allow", now=T0)
    assert out.decision == "review"
    assert out.valves == ["review-only mode: would have blocked"]
    assert policy.decide(transaction(), FEATURES, "review", now=T0).decision == "review"
    policy.apply(control("set_mode", mode="monitor"))
    out = policy.decide(big, FEATURES, "allow", now=T0)
    assert (out.decision, out.valves) == ("allow", ["monitor mode: would have blocked"])
    out = policy.decide(transaction(), FEATURES, "review", now=T0)
    assert (out.decision, out.valves) == ("allow", ["monitor mode: would have reviewed"])
    policy.apply(control("set_mode", mode="normal"))
    assert policy.decide(big, FEATURES, "allow", now=T0).decision == "block"


def test_the_block_cap_turns_blocks_into_reviews_past_the_share() -> None:
    policy = Policy(max_block_share=0.05, block_window=100)
    decided = [
        policy.decide(transaction(f"t{i}"), FEATURES, "block" if i % 2 else "allow", now=T0)
        for i in range(200)
    ]
    blocks = [i for i, out in enumerate(decided) if out.decision == "block"]
    capped = [out for out in decided if out.capped]
    # At most 5 blocks in any 100 decisions; the rest of the would-be blocks are reviewed.
    assert all(sum(b in range(s, s + 100) for b in blocks) <= 5 for s in range(100))
    assert len(blocks) + len(capped) == 100 and len(capped) > 80
    assert capped[0].decision == "review"
    assert capped[0].valves == [
        "blocks capped: 5.0% of the last 100 decisions were blocks, at or above the 5.0% "
        "cap: review instead"
    ]
    status = policy.status()
    assert status.block_cap_tripped and status.blocks_capped == len(capped)
    assert status.block_share == pytest.approx(0.05)
    # Without a cap (1, the default), every block stands.
    free = Policy()
    assert all(
        free.decide(transaction(f"t{i}"), FEATURES, "block", now=T0).decision == "block"
        for i in range(50)
    )


def test_the_policy_pickles_without_its_compiled_programs() -> None:
    policy = Policy()
    policy.apply(rule("big", "amount > 1000.0"))
    assert policy.decide(transaction(amount=2000.0), FEATURES, "allow", now=T0).decision == "block"
    assert policy._compiled is not None
    copy = pickle.loads(pickle.dumps(policy))
    assert copy._compiled is None and copy.rules == policy.rules
    assert copy.decide(transaction(amount=2000.0), FEATURES, "allow", now=T0).decision == "block"
    assert copy.rule_hits["big"] == 2


class UnusableScorer(HybridScorer):
    """A model whose score is NaN (a broken model)."""

    def predict_parts(self, x: dict[str, float]) -> HybridScore:
        return HybridScore(math.nan, math.nan, None, 0.0)


class FailingScorer(HybridScorer):
    def predict_parts(self, x: dict[str, float]) -> HybridScore:
        raise RuntimeError("the model is broken")


@pytest.mark.parametrize("scorer", [UnusableScorer, FailingScorer])
def test_an_unusable_model_falls_back_to_rules_alone(scorer: type[HybridScorer]) -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    txs = background()[:50]
    for t in txs[:40]:
        core.score(t)
    core.model.decider.scorer = scorer()
    core.apply(rule("big", f"amount >= {txs[45].amount}", outcome="review"))
    with capture_logs() as logged:
        outs = [core.score(t) for t in txs[40:]]
    assert all(o.degraded and o.to_decision().degraded for o in outs)
    assert all(o.to_decision().score == 0.0 for o in outs)
    for t, o in zip(txs[40:], outs, strict=True):
        assert o.decision == ("review" if t.amount >= txs[45].amount else "allow")
        assert "model score unusable" in " ".join(o.reasons)
    [status] = core.statuses()
    assert status.policy is not None and status.policy.degraded == 10
    assert [e["event"] for e in logged] == ["model failed to score"]  # once, not 10 times
    core.model.decider.scorer = HybridScorer()
    with capture_logs() as logged:
        assert not core.score(txs[-1].model_copy(update={"transaction_id": "again"})).degraded
    assert [e["event"] for e in logged] == ["model scores again"]


def test_status_and_metrics_show_the_policy() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    core.apply(rule("big", "amount > 0.0", outcome="review", mode="shadow"))
    core.apply(entry("block.card_id", background()[3].card_id))
    core.apply(control("set_mode", mode="review_only"))
    metrics = DetectorMetrics()
    for t in background()[:20]:
        scored = core.score(t)
        assert scored.policy is not None
        metrics.policy(scored.policy)
    [status] = core.statuses()
    policy = status.policy
    assert policy is not None and policy.mode == "review_only"
    assert [(r.rule.name, r.hits) for r in policy.rules] == [("big", 20)]
    assert policy.list_sizes["block.card_id"] == 1
    listed = sum(t.card_id == background()[3].card_id for t in background()[:20])
    assert policy.list_hits == {"block.card_id": listed}
    text = metrics.registry.get_sample_value
    assert text("fraudstream_rule_hits_total", {"rule": "big", "mode": "shadow"}) == 20
    assert text("fraudstream_list_hits_total", {"list": "block.card_id"}) == listed


def test_a_state_without_a_policy_gets_an_empty_one() -> None:
    core = ScoringCore(ScoringSettings(max_block_share=0.02, block_cap_window=50))
    del core.model.__dict__["policy"]
    state = ensure_models(core.model, core.config)
    assert state.policy.rules == {} and state.policy.mode == "normal"
    assert (state.policy.max_block_share, state.policy.block_window) == (0.02, 50)


def test_the_policy_gauges_come_from_the_deciding_models_status() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0, max_block_share=0.05))
    core.apply(entry("allow.country", "FR"))
    core.apply(control("set_mode", mode="monitor"))
    metrics = DetectorMetrics()
    for status in core.statuses():
        metrics.model_status(status)
    value = metrics.registry.get_sample_value
    assert value("fraudstream_policy_mode", {"mode": "monitor"}) == 1
    assert value("fraudstream_policy_mode", {"mode": "normal"}) == 0
    assert value("fraudstream_max_block_share", {}) == 0.05
    assert value("fraudstream_block_cap_tripped", {}) == 0
    assert value("fraudstream_list_entries", {"list": "allow.country"}) == 1
    assert value("fraudstream_list_entries", {"list": "block.card_id"}) == 0
