"""The model step: score, decide and explain; learn from labels; apply controls.

The model step holds one or more models: the deciding one (whose score makes the
decision) and challengers that score every transaction in shadow and learn from the
same labels, so that an admin can compare them (``ModelStatus.quality``) and switch.
``Control`` messages (thresholds, the deciding model) go straight to the model step.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from detector import __version__
from detector.challengers import (
    MODEL_ACTIONS,
    ChallengerError,
    apply_model_control,
    build_scorer,
    configured_spec,
    ensure_identity,
    new_checkpoints,
    save_checkpoint,
    version_of,
)
from detector.checkpoints import Checkpoints
from detector.contracts import Control, DecisionKind, ModelSpec, RejectReason, ThresholdChange
from detector.decision import (
    CapacityThresholds,
    Thresholds,
    ThresholdsInForce,
    VolumeThresholds,
)
from detector.events import DriftWatch, new_drift_watch, watch_label, watch_scored
from detector.exploration import ExplorationSampler
from detector.expressions import ExpressionError
from detector.items import (
    ControlApplied,
    Featured,
    LabelToLearn,
    Learned,
    ModelIn,
    ModelOut,
    Noticed,
    Origin,
    Rejected,
    Scored,
)
from detector.policy import POLICY_ACTIONS, Policy
from detector.reasons import decision_reason, explain
from detector.settings import ScoringSettings
from detector.shards import shard_window
from detector.waiting import StoredScores
from models import HybridScore, HybridScorer, QualityTracker, ScoreCalibrator
from models.quality import QualityMinimum

log = structlog.get_logger(__name__)


@dataclass
class ModelSlot:
    """One model of the model step: its scorer, thresholds, counters and quality.

    Every model has its own thresholds of the one setting in force (the same fixed
    values, the same shares over a window of its own scores in volume mode, or the same
    capacity over its own scores and traffic in capacity mode): a challenger's shadow
    decisions, and so its alert precision and recall, are what it would alert if it
    decided, and making it decide keeps the alert volume steady.
    """

    name: str
    scorer: HybridScorer
    thresholds: ThresholdsInForce
    quality: QualityTracker
    # The model's recent scores, kept in every mode: in volume mode it is ``thresholds``;
    # under fixed thresholds it keeps following the scores, so that going back to volume
    # mode needs no warm-up on the old fixed thresholds.
    window: VolumeThresholds
    # raw score -> probability of fraud: the published score, on which thresholds act
    calibrator: ScoreCalibrator
    transactions_scored: int = 0
    # shards of the model step: in capacity mode each shard keeps its share of the capacity
    shards: int = 1
    # what this model decided, or would have decided in shadow, under its thresholds
    decisions: collections.Counter[str] = field(default_factory=collections.Counter)
    # what the model is, which version of it runs, and its saved states (challengers.py)
    spec: ModelSpec | None = None
    generation: int = 1
    version: str = __version__
    checkpoints: Checkpoints = field(default_factory=Checkpoints)


@dataclass
class ModelState:
    """Every model of the detector, which one decides, and the controls applied."""

    models: dict[str, ModelSlot]
    deciding: str
    version: str = __version__
    labels_by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    last_control_id: str | None = None
    last_label_at: float | None = None  # epoch seconds, wall clock
    # rules, lists and safety valves on the deciding model's decisions (detector/policy.py)
    policy: Policy = field(default_factory=Policy)
    # the allowed transactions put up for review all the same (detector/exploration.py)
    exploration: ExplorationSampler = field(default_factory=ExplorationSampler)
    # shifts in scores, features and labels (detector/events.py): the watching shard's
    drift: DriftWatch | None = None

    @property
    def decider(self) -> ModelSlot:
        return self.models[self.deciding]


def model_step(
    state: ModelState | None,
    item: ModelIn,
    config: ScoringSettings,
    *,
    origin: Origin | None = None,
    watch: bool = True,
) -> tuple[ModelState, list[ModelOut]]:
    """Score, learn or apply a control; ``origin`` is a control's Kafka record.

    ``watch``: this shard watches scores, features and labels for shifts (one shard
    does, see ``detector.events``)."""
    if state is None:
        state = new_model_state(config)
    if isinstance(item, Featured):
        scored = _score(state, item, config)
        if not watch:
            return state, [scored]
        return state, [scored, *_watch_scored(state, scored, config)]
    if isinstance(item, LabelToLearn):
        learned = _learn(state, item)
        out: list[ModelOut] = [learned] if learned is not None else []
        if watch:
            drift = state.drift = state.drift or new_drift_watch(config)
            out += watch_label(drift, item, state.deciding)
        return state, out
    return state, [apply_control(state, item, origin=origin, config=config)]


def _watch_scored(state: ModelState, scored: Scored, config: ScoringSettings) -> list[Noticed]:
    if scored.degraded:
        return []
    drift = state.drift = state.drift or new_drift_watch(config)
    ts = scored.transaction.epoch_seconds
    return watch_scored(drift, ts, scored.parts.score, scored.features, scored.model_name, config)


def _score(state: ModelState, item: Featured, config: ScoringSettings) -> Scored:
    """Every model scores the transaction; the deciding model's score decides."""
    tx = item.transaction
    features = item.features
    tx_id = tx.transaction_id
    ts = tx.epoch_seconds
    deciding = state.deciding
    chosen: tuple[ModelSlot, HybridScore | None, DecisionKind] | None = None
    for slot in state.models.values():
        raw = _predict(slot, features)
        if raw is None:  # an unusable score: the deciding model's decision is degraded
            if slot.name == deciding:
                chosen = (slot, None, "allow")
            continue
        parts = raw._replace(score=slot.calibrator.predict_one(raw.score), raw_score=raw.score)
        decision = slot.thresholds.decide_transaction(parts.score, at=ts, anomaly=parts.anomaly)
        if item.burst is None:  # an attack must not raise the thresholds for the others
            slot.window.update(raw.score)  # raw: see VolumeThresholds.scale
        slot.scorer.learn_unlabelled(features, raw)
        slot.transactions_scored += 1
        slot.decisions[decision] += 1
        # the raw score: what the calibrator learns to map, when the label comes
        slot.quality.record(tx_id, ts, raw.score, decision != "allow")
        if slot.name == deciding:
            chosen = (slot, parts, decision)
    assert chosen is not None, f"the deciding model {deciding!r} is not among the models"
    slot, decided, decision = chosen
    scored_at = datetime.now(UTC)
    # A terminal in a burst: its transactions go to review whatever the thresholds say.
    raised = item.burst is not None and decided is not None and decision == "allow"
    # Lists, rules and the safety valves decide last, on the deciding model's decision.
    outcome = state.policy.decide(
        tx,
        features,
        ("review" if raised else decision) if decided is not None else None,
        now=scored_at.timestamp(),
    )
    reasons = list(outcome.reasons)
    if item.burst is not None and (raised or outcome.decision != "allow"):
        reasons.append(item.burst)
    if decided is not None:
        reasons += explain(
            features,
            decided,
            terminal_id=tx.terminal_id,
            history_days=config.card_history_days,
            frauds_learned=frauds_learned(slot),
        )
    reasons += outcome.valves
    # The exploration sample: chosen by the transaction id, never by the score.
    explore = (
        outcome.decision == "allow"
        and decided is not None
        and state.exploration.choose(tx_id, at=ts)
    )
    if explore and not reasons and decided is not None:  # every alert gives a reason
        reasons.append(f"score {decided.score:.2f}")
    if not reasons and outcome.decision != "allow" and decided is not None:
        # thresholds alone alerted (pacing, a young window, a fallback threshold): say so
        reasons.append(decision_reason(outcome.decision, decided, slot.thresholds))
    return Scored(
        transaction=tx,
        features=features,
        parts=decided if decided is not None else UNUSABLE,
        decision=outcome.decision,
        reasons=reasons,
        model_name=slot.name,
        model_version=slot.version,
        scored_at=scored_at,
        policy=outcome,
        exploration=explore,
    )


def frauds_learned(slot: ModelSlot) -> int:
    """Fraud labels the model learned, less those whose verdict changed since (as this
    shard knows them)."""
    learned = slot.scorer.labels_learned["fraud"]
    return max(0, learned - slot.quality.relabelled["fraud"])


# The parts of a decision made without a usable score (published with score 0).
UNUSABLE = HybridScore(score=0.0, anomaly=0.0, fraud_probability=None, classifier_weight=0.0)


# Models whose last score was unusable, so that a failing model is logged once, not for
# every transaction (per process).
_unusable: set[str] = set()


def _predict(slot: ModelSlot, features: dict[str, float]) -> HybridScore | None:
    """The model's score of ``features``, or None when it has none to give (it failed,
    or gave a number that is not one): the transaction is decided without it."""
    error = ""
    try:
        parts = slot.scorer.predict_parts(features)
        if not math.isfinite(parts.score):
            error = f"score {parts.score}"
    except Exception as failure:
        error = str(failure)[:300] or type(failure).__name__
    if not error:
        if _unusable and slot.name in _unusable:
            _unusable.discard(slot.name)
            log.warning("model scores again", model=slot.name)
        return parts
    if slot.name not in _unusable:
        _unusable.add(slot.name)
        log.warning("model failed to score", model=slot.name, error=error)
    return None


def _learn(state: ModelState, item: LabelToLearn) -> Learned | None:
    """Every model learns every label, from the features recorded at scoring time.

    Only the copy of a label in its transaction's own shard (``home``) counts it and
    reports it learned: every shard learns it, but it is learned once. The calibrator
    learns it in the shard that still knows the transaction's decision-time score.
    """
    for slot in state.models.values():
        slot.scorer.learn_one(item.features, item.is_fraud)
        recalled = slot.quality.learn(
            item.transaction_id, item.is_fraud, item.source, origin=item.origin
        )
        if recalled is None:
            continue
        if recalled.previous is None:
            slot.calibrator.learn_one(recalled.score, item.is_fraud)
        elif recalled.previous != item.is_fraud:
            slot.calibrator.revise_one(recalled.score, item.is_fraud)
    for slot in state.models.values():
        save_checkpoint(slot)  # when due: the label learned, calibrator included
    if not item.home:
        return None
    state.labels_by_source[item.source] += 1
    if item.source != "presumed":
        state.last_label_at = time.time()
    return Learned(item.transaction_id, item.is_fraud, item.source)


def apply_control(
    state: ModelState,
    control: Control,
    *,
    origin: Origin | None = None,
    config: ScoringSettings | None = None,
) -> ControlApplied | Rejected:
    """Apply an admin's control message at once, or reject it and change nothing."""
    try:
        if control.action in MODEL_ACTIONS:
            apply_model_control(state, control, config or ScoringSettings())
        elif control.action in POLICY_ACTIONS:
            state.policy.apply(control)
        elif control.action == "set_deciding_model":
            name = control.model_name
            if name not in state.models:
                raise ChallengerError(
                    f"unknown model {name!r}; the models are "
                    f"{', '.join(repr(n) for n in state.models)}"
                )
            state.deciding = name
        else:
            change = control.thresholds
            assert change is not None  # the contract requires it for set_thresholds
            for slot in state.models.values():
                slot.thresholds = changed_thresholds(slot, change)
    except (ChallengerError, ExpressionError) as error:
        return Rejected(
            RejectReason.INVALID,
            f"control {control.control_id!r}: {error}",
            control.model_dump_json().encode(),
            control=True,
            origin=origin,
        )
    state.last_control_id = control.control_id
    return ControlApplied(control)


def changed_thresholds(slot: ModelSlot, change: ThresholdChange) -> ThresholdsInForce:
    """The thresholds of ``slot`` after ``change``.

    Volume and capacity thresholds decide over the model's window of scores, which has
    followed the scores in every mode: they decide at once. A new capacity keeps the
    traffic and the alerts of the last hour counted under the previous one.
    """
    window = slot.window
    current = slot.thresholds
    if change.mode == "fixed":
        assert change.review_threshold is not None and change.block_threshold is not None
        return Thresholds(change.review_threshold, change.block_threshold)
    if change.mode == "capacity":
        assert change.review_capacity_per_hour is not None
        block = change.block_threshold
        if block is None:
            block = (
                current.block_threshold
                if isinstance(current, CapacityThresholds)
                else (window.fallback.block)
            )
        if isinstance(current, CapacityThresholds):
            current.set_capacity(change.review_capacity_per_hour, block)
            return current
        return CapacityThresholds(
            window,
            change.review_capacity_per_hour,
            block=block,
            shards=slot.shards,
            fallback=window.fallback,
        )
    assert change.review_share is not None and change.block_share is not None
    window.set_shares(change.review_share, change.block_share)
    return window


def new_thresholds(config: ScoringSettings) -> tuple[ThresholdsInForce, VolumeThresholds]:
    """The thresholds in force at start, and the window of scores (see ``ModelSlot``)."""
    fixed = Thresholds(config.review_threshold, config.block_threshold)
    window = VolumeThresholds(config.review_share, config.block_share, fallback=fixed)
    if config.threshold_mode == "fixed":
        return fixed, window
    if config.threshold_mode == "capacity":
        capacity = CapacityThresholds(
            window,
            config.review_capacity_per_hour,
            block=config.block_threshold,
            shards=config.shards,
            fallback=fixed,
        )
        return capacity, window
    return window, window


def model_name(kind: str) -> str:
    """The published name of the hybrid model with classifier ``kind``."""
    return f"hybrid-tail-{kind}"


def new_model_slot(kind: str, config: ScoringSettings, spec: ModelSpec | None = None) -> ModelSlot:
    """A fresh model of ``kind`` (of the configuration), or of ``spec`` (a challenger)."""
    spec = spec or configured_spec(kind, model_name(kind))
    in_force, window = new_thresholds(config)
    calibrator = new_calibrator(config)
    window.scale = calibrator.predict_one
    checkpoints, generation = new_checkpoints(spec.name, config)
    return ModelSlot(
        name=spec.name,
        scorer=build_scorer(spec, config),
        spec=spec,
        generation=generation,
        version=version_of(spec, config, generation),
        checkpoints=checkpoints,
        thresholds=in_force,
        shards=config.shards,
        quality=QualityTracker(
            shard_window(config),
            horizon_days=config.label_horizon_days,
            minimum=quality_minimum(config),
            scores=(
                StoredScores(spec.name, config.waiting_store, config.waiting_cache_mb)
                if config.waiting_store is not None
                else None
            ),
        ),
        window=window,
        calibrator=calibrator,
    )


def quality_minimum(config: ScoringSettings) -> QualityMinimum:
    """The fewest labels a quality figure is published over."""
    return QualityMinimum(
        config.quality_min_frauds,
        config.quality_min_legit,
        config.quality_min_alerts,
        config.quality_min_exploration,
    )


def new_calibrator(config: ScoringSettings) -> ScoreCalibrator:
    return ScoreCalibrator(
        base_rate=config.calibration_base_rate, half_life=config.calibration_half_life_labels
    )


def new_model_state(config: ScoringSettings) -> ModelState:
    slots = [new_model_slot(kind, config) for kind in config.model_kinds]
    return ModelState(
        models={slot.name: slot for slot in slots},
        deciding=slots[0].name,
        policy=Policy(config.max_block_share, config.block_cap_window),
        exploration=new_sampler(config),
    )


def new_sampler(config: ScoringSettings) -> ExplorationSampler:
    return ExplorationSampler(
        config.exploration_share, config.exploration_max_per_hour, shards=config.shards
    )


def ensure_models(state: ModelState, config: ScoringSettings) -> ModelState:
    """Bring a recovered state in line with the configuration.

    Models configured since the snapshot start fresh (with the thresholds in force);
    models no longer configured keep running, so that an admin's choice of deciding
    model survives a restart. The quality window follows the configuration. Models of
    a snapshot written before scores were calibrated (format 4) get a calibrator that
    starts from its prior.
    """
    for kind in config.model_kinds:
        if model_name(kind) not in state.models:
            slot = new_model_slot(kind, config)
            thresholds_like_decider(state, slot)
            state.models[slot.name] = slot
    for slot in state.models.values():
        ensure_identity(slot, config)  # a snapshot from before model versions: none yet
        slot.shards = config.shards
        if isinstance(slot.thresholds, CapacityThresholds):
            slot.thresholds.set_shards(config.shards)
        if not hasattr(slot, "calibrator"):  # a snapshot of format 4: none yet
            slot.calibrator = new_calibrator(config)
        slot.window.scale = slot.calibrator.predict_one
        if slot.quality.size != shard_window(config):
            slot.quality.resize(shard_window(config))
        slot.quality.minimum = quality_minimum(config)
    if not isinstance(getattr(state, "policy", None), Policy):  # a state from before policies
        state.policy = Policy()
    state.policy.configure(config.max_block_share, config.block_cap_window)
    if not hasattr(state, "exploration"):  # a state from before the exploration sample
        state.exploration = new_sampler(config)
    state.exploration.configure(
        config.exploration_share, config.exploration_max_per_hour, config.shards
    )
    return state


def thresholds_like_decider(state: ModelState, slot: ModelSlot) -> None:
    """Give a new model the thresholds in force: the deciding model's setting, over a
    window of its own scores."""
    slot.window = VolumeThresholds(
        state.decider.window.review_share,
        state.decider.window.block_share,
        fallback=state.decider.window.fallback,
    )
    slot.window.scale = slot.calibrator.predict_one
    slot.thresholds = _like(state.decider.thresholds, slot.window)


def _like(current: ThresholdsInForce, window: VolumeThresholds) -> ThresholdsInForce:
    """Thresholds of the same setting as ``current``, over another model's ``window``."""
    if isinstance(current, Thresholds):
        return current
    if isinstance(current, CapacityThresholds):
        return CapacityThresholds(
            window,
            current.per_hour,
            block=current.block_threshold,
            shards=current.shards,
            fallback=current.fallback,
        )
    return window
