"""Control messages in the scoring core: thresholds, the deciding model, challengers."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detector.contracts import Control, RejectReason, ThresholdChange
from detector.core import ScoringCore
from detector.decision import Thresholds, VolumeThresholds
from detector.items import ControlApplied, Rejected, Scored
from detector.scoring import ModelState, ensure_models, new_model_state
from detector.settings import ScoringSettings, Settings
from detector.validation import parse_control
from tests.unit.test_scoring import background, label, tx

LOGREG, TREE = "hybrid-tail-logreg", "hybrid-tail-tree"
NOW = datetime(2024, 3, 1, tzinfo=UTC)


def control(control_id: str = "c-1", **fields: Any) -> Control:
    return Control(control_id=control_id, requested_by="admin", requested_at=NOW, **fields)


def set_fixed(review: float, block: float, control_id: str = "c-1") -> Control:
    change = ThresholdChange(mode="fixed", review_threshold=review, block_threshold=block)
    return control(control_id, action="set_thresholds", thresholds=change)


def set_volume(review: float, block: float, control_id: str = "c-1") -> Control:
    change = ThresholdChange(mode="volume", review_share=review, block_share=block)
    return control(control_id, action="set_thresholds", thresholds=change)


def set_deciding(name: str, control_id: str = "c-1") -> Control:
    return control(control_id, action="set_deciding_model", model_name=name)


def warmed(config: ScoringSettings, n: int | None = None) -> tuple[ScoringCore, list[Scored]]:
    core = ScoringCore(config)
    scored = [core.score(t) for t in background()[:n]]
    return core, scored


def later(i: int) -> Any:
    last = background()[-1]
    return tx(
        f"later{i}", last.card_id, last.terminal_id, 55.0, last.timestamp + timedelta(hours=i)
    )


def test_fixed_thresholds_apply_at_once() -> None:
    config = ScoringSettings(
        presume_legit_days=0, threshold_mode="fixed", review_threshold=1.0, block_threshold=1.0
    )
    core, _ = warmed(config, 200)
    assert core.score(later(0)).decision == "allow"
    assert isinstance(core.apply(set_fixed(0.0, 0.0, "block-all")), ControlApplied)
    assert core.score(later(1)).decision == "block"
    assert core.model.decider.thresholds == Thresholds(0.0, 0.0)
    [status] = core.statuses()
    assert (status.threshold_mode, status.review_threshold, status.block_threshold) == (
        "fixed",
        0.0,
        0.0,
    )
    assert (status.review_share, status.block_share) == (None, None)
    assert status.last_control_id == "block-all"


def test_volume_shares_change_over_the_same_window() -> None:
    core, scored = warmed(ScoringSettings(presume_legit_days=0, threshold_mode="volume"), 1500)
    before = core.model.decider.thresholds
    assert isinstance(before, VolumeThresholds)
    core.apply(set_volume(0.2, 0.05))
    after = core.model.decider.thresholds
    assert after is before, "the rolling window is kept"
    # The new thresholds are the new shares' quantiles of the very same scores.
    expected = VolumeThresholds(0.2, 0.05)
    for s in scored:
        expected.update(s.parts.score)
    assert (after.review, after.block) == (expected.review, expected.block)
    assert (after.review_share, after.block_share) == (0.2, 0.05)
    [status] = core.statuses()
    assert (status.threshold_mode, status.review_share, status.block_share) == ("volume", 0.2, 0.05)
    assert status.review_threshold == expected.review


def test_switching_modes_keeps_the_models_learning() -> None:
    core, _ = warmed(ScoringSettings(presume_legit_days=0, threshold_mode="volume"), 300)
    core.apply(set_fixed(0.5, 0.7, "fixed"))
    assert core.model.decider.thresholds == Thresholds(0.5, 0.7)
    core.apply(set_volume(0.1, 0.01, "volume"))
    volume = core.model.decider.thresholds
    assert isinstance(volume, VolumeThresholds)
    scored_before = core.model.decider.transactions_scored
    core.score(later(0))
    assert core.model.decider.transactions_scored == scored_before + 1


def test_back_to_volume_the_thresholds_follow_the_scores_at_once() -> None:
    # Regression: after fixed 0/0 and back to volume, the old fixed thresholds decided
    # (blocking everything) until a fresh window had warmed up on 1,000 new scores.
    core, _ = warmed(ScoringSettings(presume_legit_days=0, threshold_mode="volume"))
    core.apply(set_fixed(0.0, 0.0, "block-all"))
    assert core.score(later(0)).decision == "block"
    for i in range(1, 300):  # the scores under fixed thresholds still fill the window
        core.score(later(i))
    core.apply(set_volume(0.01, 0.001, "volume-again"))
    volume = core.model.decider.thresholds
    assert isinstance(volume, VolumeThresholds)
    assert volume.review > 0.0 and volume.block >= volume.review
    decided = [core.score(later(1000 + i)).decision for i in range(300)]
    assert decided.count("block") <= 15, decided.count("block")
    [status] = core.statuses()
    assert (status.threshold_mode, status.review_share, status.block_share) == (
        "volume",
        0.01,
        0.001,
    )


def test_fixed_from_the_start_then_volume_needs_no_warm_up() -> None:
    core, _ = warmed(
        ScoringSettings(presume_legit_days=0, threshold_mode="fixed", review_threshold=0.0)
    )
    for i in range(200):  # past the window's warm-up of 1,000 scores
        core.score(later(i))
    core.apply(set_volume(0.01, 0.001, "volume"))
    volume = core.model.decider.thresholds
    assert isinstance(volume, VolumeThresholds)
    assert volume.review > 0.0, "the window of the fixed period decides"


def test_the_deciding_model_can_be_switched() -> None:
    core, scored = warmed(ScoringSettings(presume_legit_days=0, challengers=("tree",)), 300)
    assert {s.model_name for s in scored} == {LOGREG}
    assert isinstance(core.apply(set_deciding(TREE, "to-tree")), ControlApplied)
    t = later(0)
    tree = copy.deepcopy(core.model.models[TREE].scorer)
    calibrator = copy.deepcopy(core.model.models[TREE].calibrator)
    out = core.score(t)
    assert out.model_name == TREE
    raw = tree.predict_parts(out.features)
    assert out.parts == raw._replace(score=calibrator.predict_one(raw.score), raw_score=raw.score)
    assert out.to_decision().model_name == TREE
    statuses = {s.model_name: s for s in core.statuses()}
    assert statuses[TREE].deciding and not statuses[LOGREG].deciding
    assert {s.last_control_id for s in statuses.values()} == {"to-tree"}
    assert core.statuses()[0].model_name == TREE, "the deciding model comes first"


def test_an_unknown_model_is_rejected_and_nothing_changes() -> None:
    core, _ = warmed(ScoringSettings(presume_legit_days=0, challengers=("tree",)), 50)
    core.apply(set_fixed(0.3, 0.6, "earlier"))
    before = pickle.dumps(core.model)
    out = core.apply(set_deciding("hybrid-tail-forest", "bad"))
    assert isinstance(out, Rejected)
    assert out.reason is RejectReason.INVALID and out.control
    assert "unknown model 'hybrid-tail-forest'" in out.error
    assert f"'{LOGREG}', '{TREE}'" in out.error
    assert Control.model_validate_json(out.payload).control_id == "bad"
    assert core.model.deciding == LOGREG
    assert core.model.last_control_id == "earlier"
    assert pickle.dumps(core.model) == before


def test_challengers_score_in_shadow_and_learn_the_same_labels() -> None:
    core, scored = warmed(
        ScoringSettings(presume_legit_days=0, challengers=("tree", "logreg", "tree")), 400
    )
    assert list(core.model.models) == [LOGREG, TREE], "each model once, the deciding first"
    for s in scored[:40]:
        core.learn(label(s.transaction, "fraud" if s.score > 0.5 else "legit", "analyst"))
    for fraud in scored[40:45]:
        core.learn(label(fraud.transaction, "fraud", "analyst"))
    for slot in core.model.models.values():
        assert slot.transactions_scored == 400
        assert sum(slot.decisions.values()) == 400
        assert sum(slot.scorer.labels_learned.values()) == 45
        assert len(slot.quality) == 45
    statuses = core.statuses()
    assert [s.model_name for s in statuses] == [LOGREG, TREE]
    assert [s.deciding for s in statuses] == [True, False]
    assert all(s.quality.window == 45 and s.quality.frauds >= 5 for s in statuses)
    assert all(s.last_label_at is not None for s in statuses)
    assert statuses[0].labels_by_source == {"analyst": 45}


def test_last_label_at_ignores_presumed_labels() -> None:
    core, _ = warmed(ScoringSettings(presume_legit_days=1.0), 200)
    assert core.model.labels_by_source["presumed"] > 0
    assert core.statuses()[0].last_label_at is None


def test_quality_uses_the_score_and_decision_at_decision_time() -> None:
    core, scored = warmed(
        ScoringSettings(presume_legit_days=0, threshold_mode="fixed", review_threshold=0.0), 20
    )
    core.apply(set_fixed(1.0, 1.0))  # nothing alerted any more; the window keeps the past
    for s in scored[:10]:
        core.learn(label(s.transaction, "legit", "analyst"))
    window = core.model.models[LOGREG].quality.window()
    # the raw scores, which the calibration learns to read
    assert [o.score for o in window] == [s.parts.raw_score for s in scored[:10]]
    assert [o.alerted for o in window] == [s.decision != "allow" for s in scored[:10]]
    assert all(o.alerted for o in window)


def test_state_with_controls_survives_a_pickle() -> None:
    core, _ = warmed(ScoringSettings(presume_legit_days=0, challengers=("tree",)), 1200)
    core.apply(set_volume(0.05, 0.01, "shares"))
    core.apply(set_deciding(TREE, "switch"))
    restored: ModelState = pickle.loads(pickle.dumps(core.model))
    assert restored.deciding == TREE and restored.last_control_id == "switch"
    assert isinstance(restored.decider.thresholds, VolumeThresholds)
    assert (restored.decider.thresholds.review_share, restored.decider.thresholds.block_share) == (
        0.05,
        0.01,
    )
    twin = ScoringCore(core.config)
    twin.cards, twin.terminals, twin.model = core.cards, core.terminals, restored
    original = copy.deepcopy(core)
    t = later(0)
    assert twin.score(t).parts == original.score(t).parts
    assert twin.statuses()[0].model_dump(exclude={"emitted_at"}) == original.statuses()[
        0
    ].model_dump(exclude={"emitted_at"})


def test_a_recovered_state_gains_newly_configured_models() -> None:
    state = new_model_state(ScoringSettings(presume_legit_days=0, threshold_mode="fixed"))
    state.decider.thresholds = Thresholds(0.2, 0.4)
    state = ensure_models(
        state, ScoringSettings(presume_legit_days=0, challengers=("tree",), quality_window=100)
    )
    assert list(state.models) == [LOGREG, TREE]
    assert state.deciding == LOGREG
    assert state.models[TREE].thresholds == Thresholds(0.2, 0.4), "the thresholds in force"
    assert all(slot.quality.size == 100 for slot in state.models.values())


def test_config_from_settings_picks_up_challengers_and_the_quality_window() -> None:
    config = Settings(
        scoring=ScoringSettings(
            classifier="tree", challengers=["logreg", "forest"], quality_window=200
        )
    ).scoring
    assert config.challengers == ("logreg", "forest")
    assert config.quality_window == 200
    assert config.model_kinds == ("tree", "logreg", "forest")
    assert list(new_model_state(config).models) == [
        "hybrid-tail-tree",
        LOGREG,
        "hybrid-tail-forest",
    ]


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (b"{nope", RejectReason.NOT_JSON, "not valid JSON"),
        (None, RejectReason.INVALID, "empty record"),
        (b'{"control_id": "x"}', RejectReason.INVALID, "action: Field required"),
        (
            set_fixed(0.5, 0.6)
            .model_dump_json(exclude_none=True)
            .replace('"fixed"', '"turbo"')
            .encode(),
            RejectReason.INVALID,
            "thresholds.mode",
        ),
        (b"{" + b" " * 600 + b"}", RejectReason.OVERSIZE, "exceeds 512 bytes"),
    ],
)
def test_invalid_control_records_are_explained(
    value: bytes | None, reason: RejectReason, message: str
) -> None:
    parsed = parse_control(value, max_bytes=512)
    assert isinstance(parsed, tuple)
    assert parsed[0] is reason and message in parsed[1]


def test_a_control_from_the_future_is_still_applied() -> None:
    ahead = control(action="set_deciding_model", model_name=LOGREG).model_copy(
        update={"requested_at": datetime.now(UTC) + timedelta(days=3)}
    )
    assert parse_control(ahead.model_dump_json().encode(), max_bytes=4096) == ahead
