"""The scoring core end to end in memory: card -> terminal -> model, via ScoringCore."""

from __future__ import annotations

import array
import copy
import functools
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from detector.cards import MAX_PARKED_LABELS_PER_CARD
from detector.contracts import Alert, Decision, Label, RejectReason, Transaction, alert_id_for
from detector.core import ScoringCore
from detector.decision import Thresholds
from detector.items import Learned, Rejected, Scored
from detector.settings import ScoringSettings
from models import FEATURES
from models.pending import FEATURE_TYPECODE

START = datetime(2024, 1, 1, tzinfo=UTC)


def tx(tx_id: str, card: str, terminal: str, amount: float, when: datetime) -> Transaction:
    return Transaction(
        transaction_id=tx_id, timestamp=when, card_id=card, terminal_id=terminal, amount=amount
    )


def label(
    transaction: Transaction, verdict: str = "fraud", source: str = "chargeback", days: float = 5
) -> Label:
    return Label(
        transaction_id=transaction.transaction_id,
        card_id=transaction.card_id,
        label=verdict,  # type: ignore[arg-type]
        source=source,
        labeled_at=transaction.timestamp + timedelta(days=days),
    )


@functools.cache
def background(days: int = 30, cards: int = 20, seed: int = 3) -> tuple[Transaction, ...]:
    """Ordinary traffic: each card pays 1-2 times a day around its own mean amount, at
    three terminals of its own. Long enough for the anomaly detector to warm up."""
    rng = random.Random(seed)
    out = []
    n = 0
    for card in range(cards):
        mean = 20 + 5 * card
        terminals = [f"t{card}-{k}" for k in range(3)]
        for day in range(days):
            for k in range(rng.randint(1, 2)):
                n += 1
                out.append(
                    tx(
                        f"bg{n}",
                        f"c{card}",
                        rng.choice(terminals),
                        round(mean * rng.uniform(0.7, 1.3), 2),
                        START + timedelta(days=day, hours=8 + 6 * k + rng.random()),
                    )
                )
    out.sort(key=lambda t: t.timestamp)
    return tuple(out)


def steady_card() -> list[Transaction]:
    """A card paying exactly 40.00 twice a day for 30 days at three terminals."""
    return [
        tx(
            f"steady{day}-{k}",
            "steady",
            f"home{(day + k) % 3}",
            40.0,
            START + timedelta(days=day, hours=9 + 7 * k, minutes=13),
        )
        for day in range(30)
        for k in range(2)
    ]


def replay(core: ScoringCore, transactions: list[Transaction]) -> list[Scored]:
    return [core.score(t) for t in sorted(transactions, key=lambda t: t.timestamp)]


# --- duplicates and unknown labels -----------------------------------------------------


def test_duplicate_transaction_is_rejected_without_a_second_decision() -> None:
    core = ScoringCore()
    first = tx("tx-1", "c1", "t1", 25.0, START)
    out = core.process(first)
    assert [type(o) for o in out] == [Scored]
    again = core.process(first)
    assert len(again) == 1 and isinstance(again[0], Rejected)
    assert again[0].reason is RejectReason.DUPLICATE
    assert "'tx-1' was already decided" in again[0].error
    assert Transaction.model_validate_json(again[0].payload) == first
    # Same id, other content (a replay with a changed amount) is still a duplicate.
    changed = core.process(tx("tx-1", "c1", "t2", 99.0, START + timedelta(minutes=1)))
    assert isinstance(changed[0], Rejected) and changed[0].reason is RejectReason.DUPLICATE
    assert core.model.decider.transactions_scored == 1
    assert sum(core.model.decider.decisions.values()) == 1
    with pytest.raises(ValueError, match="already decided"):
        core.score(first)


def test_label_for_an_unknown_transaction_is_rejected() -> None:
    core = ScoringCore()
    known = tx("tx-1", "c1", "t1", 25.0, START)
    core.score(known)
    unknown = Label(
        transaction_id="tx-404",
        card_id="c1",
        label="fraud",
        source="analyst",
        labeled_at=START + timedelta(days=1),
    )
    # The card has not reached the label's time: the transaction may still come.
    assert core.learn(unknown) is None
    out = core.process(tx("tx-2", "c1", "t1", 25.0, START + timedelta(days=2)))
    [result] = [o for o in out if isinstance(o, Rejected)]
    assert result.reason is RejectReason.UNKNOWN_TRANSACTION
    assert "'tx-404'" in result.error and "'c1'" in result.error
    assert Label.model_validate_json(result.payload) == unknown
    # A known transaction id under another card is unknown too: labels route by card.
    core.score(tx("tx-3", "c2", "t1", 25.0, START + timedelta(days=3)))
    wrong_card = unknown.model_copy(update={"transaction_id": "tx-1", "card_id": "c2"})
    other = core.learn(wrong_card)
    assert isinstance(other, Rejected) and other.reason is RejectReason.UNKNOWN_TRANSACTION
    assert core.model.decider.scorer.labels_learned == {"fraud": 0, "legit": 0}
    assert not core.model.labels_by_source


# --- late labels ---------------------------------------------------------------------------


def test_late_label_is_learned_from_the_features_recorded_at_scoring_time() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0, classifier_warmup_frauds=1))
    history = list(background(days=20, cards=10))
    replay(core, history[:100])
    victim = tx("victim", "c1", "t1-0", 500.0, history[99].timestamp + timedelta(minutes=5))
    scored = core.score(victim)
    assert scored.features["terminal_frauds_7d"] == 0.0
    assert set(scored.features) == set(FEATURES)
    # The card and terminal move on; the features then recorded stay as they were (as
    # 32-bit floats, see FEATURE_TYPECODE).
    replay(core, history[100:150])
    recorded = core.terminals["t1-0"].pending.get("victim")
    as_scored = array.array(FEATURE_TYPECODE, [scored.features[n] for n in FEATURES])
    assert recorded == dict(zip(FEATURES, as_scored, strict=True))

    # What the model should become: the same model learning the recorded features.
    expected = copy.deepcopy(core.model.decider.scorer)
    expected.learn_one(recorded, True)

    learned = core.learn(label(victim, "fraud", "chargeback", days=4))
    assert learned == Learned("victim", is_fraud=True, source="chargeback")
    assert core.model.labels_by_source == {"chargeback": 1}
    assert core.model.decider.scorer.labels_learned == {"fraud": 1, "legit": 0}
    probes = [s.features for s in replay(ScoringCore(), history[150:160])]
    assert [core.model.decider.scorer.predict_parts(x) for x in probes] == [
        expected.predict_parts(x) for x in probes
    ]

    # The terminal now knows of a fraud: its next transaction says so.
    after = core.score(tx("next", "c2", "t1-0", 30.0, victim.timestamp + timedelta(days=2)))
    assert after.features["terminal_frauds_7d"] == 1.0
    assert after.features["terminal_frauds_28d"] == 1.0
    assert after.features["terminal_fraud_share_28d"] > 0.0

    # An analyst overturns it: the terminal forgets the fraud, the model learns legit.
    overturned = core.learn(label(victim, "legit", "analyst", days=6))
    assert overturned == Learned("victim", is_fraud=False, source="analyst")
    assert core.model.labels_by_source == {"chargeback": 1, "analyst": 1}
    later = core.score(tx("later", "c3", "t1-0", 30.0, victim.timestamp + timedelta(days=3)))
    assert later.features["terminal_frauds_7d"] == 0.0


def test_label_before_its_transaction_is_held_then_learned() -> None:
    core = ScoringCore()
    early = tx("early", "c1", "t1", 25.0, START)
    assert core.learn(label(early, days=1)) is None
    out = core.process(early)
    assert [type(o) for o in out] == [Scored, Learned]
    assert core.model.labels_by_source == {"chargeback": 1}


def test_held_labels_per_card_are_bounded() -> None:
    core = ScoringCore()
    core.score(tx("first", "c1", "t1", 25.0, START))
    for i in range(MAX_PARKED_LABELS_PER_CARD):
        ghost = tx(f"ghost-{i}", "c1", "t1", 1.0, START)
        assert core.learn(label(ghost, days=5)) is None
    overflow = core.learn(label(tx("one-more", "c1", "t1", 1.0, START), days=5))
    assert isinstance(overflow, Rejected) and "'ghost-0'" in overflow.error


def test_label_after_the_label_horizon_is_rejected() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0, label_horizon_days=2))
    old = tx("old", "c1", "t1", 20.0, START)
    core.score(old)
    core.score(tx("new", "c1", "t1", 20.0, START + timedelta(days=3)))
    result = core.learn(label(old, days=3))
    assert isinstance(result, Rejected) and result.reason is RejectReason.UNKNOWN_TRANSACTION
    assert "within the last 2 days" in result.error


# --- a planted fraud ---------------------------------------------------------------------


@functools.cache
def planted() -> tuple[Scored, ScoringCore]:
    core = ScoringCore()
    history = steady_card()
    replay(core, [*background(), *history])
    fraud = tx(
        "planted", "steady", "evil-terminal", 2000.0, history[-1].timestamp + timedelta(hours=2)
    )
    return core.score(fraud), core


def test_planted_fraud_is_reviewed_or_blocked_with_its_reasons() -> None:
    scored, _ = planted()
    assert scored.features["card_mean_amount"] == 40.0
    assert scored.features["card_amount_ratio"] == 50.0
    assert scored.features["card_new_terminal"] == 1.0
    assert scored.decision in ("review", "block"), (scored.parts, scored.reasons)
    text = " | ".join(scored.reasons)
    assert re.search(r"\b50\.0x\b", text), text
    assert "first use of terminal evil-terminal" in text
    assert scored.reasons[0].startswith("amount 50.0x this card's 30-day average (40.00)")


def test_the_same_card_at_its_usual_terminal_and_amount_is_allowed() -> None:
    _, core = planted()
    ordinary = core.score(
        tx("usual", "steady", "home0", 40.0, datetime(2024, 1, 31, 12, tzinfo=UTC))
    )
    assert ordinary.decision == "allow"
    assert not any("x this card's" in r or "first use" in r for r in ordinary.reasons)


# --- thresholds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "allow"),
        (0.599, "allow"),
        (0.6, "review"),
        (0.899, "review"),
        (0.9, "block"),
        (1.0, "block"),
    ],
)
def test_thresholds_decide_at_or_above(score: float, decision: str) -> None:
    assert Thresholds().decide(score) == decision


def test_thresholds_can_coincide() -> None:
    both = Thresholds(review=0.5, block=0.5)
    assert (both.decide(0.49), both.decide(0.5)) == ("allow", "block")
    assert Thresholds(0.0, 0.0).decide(0.0) == "block"
    assert Thresholds(1.0, 1.0).decide(0.999) == "allow"


@pytest.mark.parametrize(("review", "block"), [(0.9, 0.6), (-0.1, 0.5), (0.5, 1.1), (1.2, 1.3)])
def test_thresholds_are_validated(review: float, block: float) -> None:
    with pytest.raises(ValueError, match=r"0 <= review <= block <= 1"):
        Thresholds(review=review, block=block)


def test_core_uses_the_configured_thresholds() -> None:
    core = ScoringCore(
        ScoringSettings(presume_legit_days=0, review_threshold=0.0, block_threshold=0.0)
    )
    assert core.score(tx("a", "c1", "t1", 10.0, START)).decision == "block"
    assert core.model.decider.decisions == {"block": 1}


# --- presumed-legit labels -----------------------------------------------------------------


def test_presumed_legit_labels_come_once_per_transaction() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=1))
    a = tx("a", "c1", "t1", 10.0, START)
    b = tx("b", "c2", "t1", 10.0, START + timedelta(hours=2))
    labelled = tx("labelled", "c3", "t1", 10.0, START + timedelta(hours=3))
    for t in (a, b, labelled):
        assert [type(o) for o in core.process(t)] == [Scored]
    core.learn(label(labelled, "fraud", "analyst", days=0.5))

    # Presumption happens as the terminal's later transactions move its clock on.
    out = core.process(tx("c", "c4", "t1", 10.0, START + timedelta(days=1, hours=1)))
    assert [type(o) for o in out] == [Learned, Scored]
    assert out[0] == Learned("a", is_fraud=False, source="presumed")
    out = core.process(tx("d", "c4", "t1", 10.0, START + timedelta(days=1, hours=5)))
    assert out[:-1] == [Learned("b", is_fraud=False, source="presumed")]
    presumed = ["a", "b"]
    for i in range(4):
        out = core.process(tx(f"e{i}", "c5", "t1", 10.0, START + timedelta(days=5 + i)))
        presumed += [o.transaction_id for o in out if isinstance(o, Learned)]
    # Each transaction once, in time order, never the labelled one.
    assert presumed == ["a", "b", "c", "d", "e0", "e1", "e2"]
    assert core.model.labels_by_source == {"presumed": 7, "analyst": 1}
    assert core.model.decider.scorer.labels_learned == {"fraud": 1, "legit": 7}


def test_presumption_is_off_with_zero_days() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    core.score(tx("a", "c1", "t1", 10.0, START))
    out = core.process(tx("b", "c1", "t1", 10.0, START + timedelta(days=40)))
    assert [type(o) for o in out] == [Scored]
    assert not core.model.labels_by_source


# --- outputs as contracts ----------------------------------------------------------------


def test_scored_becomes_a_valid_decision_and_alert() -> None:
    scored, _ = planted()
    decision = scored.to_decision()
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    assert decision.transaction_id == "planted" and decision.decision == scored.decision
    assert decision.score == scored.score and 0.0 <= decision.score <= 1.0
    assert decision.reasons == scored.reasons
    assert decision.transaction_time == scored.transaction.timestamp
    alert = scored.to_alert()
    assert alert is not None
    assert Alert.model_validate_json(alert.model_dump_json()) == alert
    assert alert.alert_id == alert_id_for(scored.transaction.card_id, "planted")
    assert alert.transaction == scored.transaction
    assert alert.features == scored.features
    assert alert.decision == scored.decision


def test_allowed_transactions_raise_no_alert() -> None:
    core = ScoringCore()
    scored = core.score(tx("a", "c1", "t1", 10.0, START))
    # a small first payment: ordinary even to a new detector (its prior), and allowed
    assert scored.decision == "allow" and 0.0 < scored.score < 0.5
    assert scored.to_alert() is None
    decision = scored.to_decision()
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    assert scored.reasons == ["first transaction seen for this card"]


def test_core_counts_what_it_decides() -> None:
    core = ScoringCore()
    decided = replay(core, list(background(days=5, cards=4)))
    assert core.model.decider.transactions_scored == len(decided)
    assert sum(core.model.decider.decisions.values()) == len(decided)
    assert all(s.model_name == core.model.decider.name for s in decided)


def test_volume_thresholds_alert_about_the_target_share() -> None:
    import random

    from detector.decision import VolumeThresholds

    rng = random.Random(5)
    t = VolumeThresholds(review_share=0.02, block_share=0.005, warmup=500)
    decisions = []
    for i in range(20_000):
        score = rng.betavariate(1, 8)
        decision = t.decide(score)
        t.update(score)
        if i >= 5_000:
            decisions.append(decision)
    alerted = sum(d != "allow" for d in decisions) / len(decisions)
    blocked = sum(d == "block" for d in decisions) / len(decisions)
    assert 0.015 < alerted < 0.025
    assert 0.003 < blocked < 0.007
    assert t.block >= t.review


def test_volume_thresholds_refuse_impossible_shares() -> None:
    from detector.decision import VolumeThresholds

    with pytest.raises(ValueError, match="block_share <= review_share"):
        VolumeThresholds(review_share=0.001, block_share=0.01)


def test_volume_thresholds_follow_a_shifting_score_distribution() -> None:
    # Regression: cumulative quantiles stayed at the early, higher scores once the
    # classifier took over and scores shrank, alerting far fewer than the target share.
    import random

    from detector.decision import VolumeThresholds

    rng = random.Random(9)
    t = VolumeThresholds(review_share=0.01, block_share=0.001, warmup=100, window=5_000)
    for _ in range(20_000):  # early: anomaly scores spread over [0, 1]
        t.update(rng.random())
    recent = []
    for _ in range(20_000):  # later: small, calibrated probabilities
        score = rng.betavariate(1, 200)
        recent.append(t.decide(score))
        t.update(score)
    alerted = sum(d != "allow" for d in recent[-10_000:]) / 10_000
    assert 0.007 < alerted < 0.013
