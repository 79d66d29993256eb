"""The model step: score, decide and explain; learn from labels; apply controls.

The model step holds one or more models: the deciding one (whose score makes the
decision) and challengers that score every transaction in shadow and learn from the
same labels, so that an admin can compare them (``ModelStatus.quality``) and switch.
``Control`` messages (thresholds, the deciding model) go straight to the model step.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from detector import __version__
from detector.contracts import Control, DecisionKind, RejectReason, ThresholdChange
from detector.decision import Thresholds, VolumeThresholds
from detector.items import (
    ControlApplied,
    Featured,
    LabelToLearn,
    Learned,
    ModelIn,
    ModelOut,
    Origin,
    Rejected,
    Scored,
)
from detector.reasons import explain
from detector.settings import ScoringSettings
from detector.waiting import StoredScores
from models import CLASSIFIERS, HybridScore, HybridScorer, QualityTracker


@dataclass
class ModelSlot:
    """One model of the model step: its scorer, thresholds, counters and quality.

    Every model has its own thresholds of the one setting in force (the same fixed
    values, or the same shares over a window of its own scores in volume mode): a
    challenger's shadow decisions, and so its alert precision and recall, are what it
    would alert if it decided, and making it decide keeps the alert volume steady.
    """

    name: str
    scorer: HybridScorer
    thresholds: Thresholds | VolumeThresholds
    quality: QualityTracker
    # The model's recent scores, kept in every mode: in volume mode it is ``thresholds``;
    # under fixed thresholds it keeps following the scores, so that going back to volume
    # mode needs no warm-up on the old fixed thresholds.
    window: VolumeThresholds
    transactions_scored: int = 0
    # what this model decided, or would have decided in shadow, under its thresholds
    decisions: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class ModelState:
    """Every model of the detector, which one decides, and the controls applied."""

    models: dict[str, ModelSlot]
    deciding: str
    version: str = __version__
    labels_by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    last_control_id: str | None = None
    last_label_at: float | None = None  # epoch seconds, wall clock

    @property
    def decider(self) -> ModelSlot:
        return self.models[self.deciding]


def model_step(
    state: ModelState | None,
    item: ModelIn,
    config: ScoringSettings,
    *,
    origin: Origin | None = None,
) -> tuple[ModelState, list[ModelOut]]:
    """Score, learn or apply a control; ``origin`` is a control's Kafka record."""
    if state is None:
        state = new_model_state(config)
    if isinstance(item, Featured):
        return state, [_score(state, item, config)]
    if isinstance(item, LabelToLearn):
        learned = _learn(state, item)
        return state, [learned] if learned is not None else []
    return state, [apply_control(state, item, origin=origin)]


def _score(state: ModelState, item: Featured, config: ScoringSettings) -> Scored:
    """Every model scores the transaction; the deciding model's score decides."""
    tx = item.transaction
    features = item.features
    tx_id = tx.transaction_id
    ts = tx.epoch_seconds
    deciding = state.deciding
    chosen: tuple[ModelSlot, HybridScore, DecisionKind] | None = None
    for slot in state.models.values():
        parts = slot.scorer.predict_parts(features)
        decision = slot.thresholds.decide(parts.score)
        slot.window.update(parts.score)
        slot.scorer.learn_unlabelled(features, parts)
        slot.transactions_scored += 1
        slot.decisions[decision] += 1
        slot.quality.record(tx_id, ts, parts.score, decision != "allow")
        if slot.name == deciding:
            chosen = (slot, parts, decision)
    assert chosen is not None, f"the deciding model {deciding!r} is not among the models"
    slot, parts, decision = chosen
    reasons = explain(
        features,
        parts,
        terminal_id=tx.terminal_id,
        history_days=config.card_history_days,
        frauds_learned=slot.scorer.labels_learned["fraud"],
    )
    return Scored(
        transaction=tx,
        features=features,
        parts=parts,
        decision=decision,
        reasons=reasons,
        model_name=slot.name,
        model_version=state.version,
        scored_at=datetime.now(UTC),
    )


def _learn(state: ModelState, item: LabelToLearn) -> Learned | None:
    """Every model learns every label, from the features recorded at scoring time.

    Only the copy of a label in its transaction's own shard (``home``) counts it and
    reports it learned: every shard learns it, but it is learned once.
    """
    for slot in state.models.values():
        slot.scorer.learn_one(item.features, item.is_fraud)
        slot.quality.learn(item.transaction_id, item.is_fraud)
    if not item.home:
        return None
    state.labels_by_source[item.source] += 1
    if item.source != "presumed":
        state.last_label_at = time.time()
    return Learned(item.transaction_id, item.is_fraud, item.source)


def apply_control(
    state: ModelState, control: Control, *, origin: Origin | None = None
) -> ControlApplied | Rejected:
    """Apply an admin's control message at once, or reject it and change nothing."""
    if control.action == "set_deciding_model":
        name = control.model_name
        if name not in state.models:
            return Rejected(
                RejectReason.INVALID,
                f"control {control.control_id!r}: unknown model {name!r}; the models are "
                f"{', '.join(repr(n) for n in state.models)}",
                control.model_dump_json().encode(),
                control=True,
                origin=origin,
            )
        state.deciding = name
    else:
        change = control.thresholds
        assert change is not None  # the contract requires it for set_thresholds
        for slot in state.models.values():
            slot.thresholds = changed_thresholds(slot.window, change)
    state.last_control_id = control.control_id
    return ControlApplied(control)


def changed_thresholds(
    window: VolumeThresholds, change: ThresholdChange
) -> Thresholds | VolumeThresholds:
    """The thresholds after ``change``; volume thresholds are the model's window of scores."""
    if change.mode == "fixed":
        assert change.review_threshold is not None and change.block_threshold is not None
        return Thresholds(change.review_threshold, change.block_threshold)
    assert change.review_share is not None and change.block_share is not None
    # The window has followed the scores under fixed thresholds too: it decides at once.
    window.set_shares(change.review_share, change.block_share)
    return window


def new_thresholds(
    config: ScoringSettings,
) -> tuple[Thresholds | VolumeThresholds, VolumeThresholds]:
    """The thresholds in force at start, and the window of scores (see ``ModelSlot``)."""
    fixed = Thresholds(config.review_threshold, config.block_threshold)
    window = VolumeThresholds(config.review_share, config.block_share, fallback=fixed)
    return (fixed if config.threshold_mode == "fixed" else window), window


def model_name(kind: str) -> str:
    """The published name of the hybrid model with classifier ``kind``."""
    return f"hybrid-tail-{kind}"


def new_model_slot(kind: str, config: ScoringSettings) -> ModelSlot:
    in_force, window = new_thresholds(config)
    return ModelSlot(
        name=model_name(kind),
        scorer=HybridScorer(
            classifier=CLASSIFIERS[kind](), warmup_frauds=config.classifier_warmup_frauds
        ),
        thresholds=in_force,
        quality=QualityTracker(
            shard_window(config),
            horizon_days=config.label_horizon_days,
            scores=(
                StoredScores(model_name(kind), config.waiting_store, config.waiting_cache_mb)
                if config.waiting_store is not None
                else None
            ),
        ),
        window=window,
    )


def new_model_state(config: ScoringSettings) -> ModelState:
    slots = [new_model_slot(kind, config) for kind in config.model_kinds]
    return ModelState(models={slot.name: slot for slot in slots}, deciding=slots[0].name)


def ensure_models(state: ModelState, config: ScoringSettings) -> ModelState:
    """Bring a recovered state in line with the configuration.

    Models configured since the snapshot start fresh (with the thresholds in force);
    models no longer configured keep running, so that an admin's choice of deciding
    model survives a restart. The quality window follows the configuration.
    """
    for kind in config.model_kinds:
        if model_name(kind) not in state.models:
            slot = new_model_slot(kind, config)
            current = state.decider.thresholds
            slot.window = VolumeThresholds(
                state.decider.window.review_share,
                state.decider.window.block_share,
                fallback=state.decider.window.fallback,
            )
            slot.thresholds = current if isinstance(current, Thresholds) else slot.window
            state.models[slot.name] = slot
    for slot in state.models.values():
        if slot.quality.size != shard_window(config):
            slot.quality.resize(shard_window(config))
    return state


# --- shards of the model step ------------------------------------------------------------
#
# The model step can run as several shards, one per worker, each with models of its own:
# a transaction is scored by the shard its id hashes to, and every shard learns every
# label, so that each shard's classifier is the one a single model step would train.
# (Sending a legitimate label to its own shard only, weighed by the number of shards,
# halves the learning but cost 0.07 of average precision on the Handbook's July weeks
# with two shards; every label to every shard holds it at the single model's 0.672.)
# Control messages reach every shard, so thresholds and the deciding model are one
# policy; in volume mode each shard keeps the shares over its own scores.


def shard_window(config: ScoringSettings) -> int:
    """Labelled transactions in each shard's quality window: together, the configured."""
    return -(-config.quality_window // config.shards)


def shard_of(transaction_id: str, shards: int) -> int:
    """The model shard that scores transaction ``transaction_id`` (stable everywhere)."""
    if shards == 1:
        return 0
    return zlib.crc32(transaction_id.encode()) % shards


def to_shards(item: ModelIn, shards: int) -> list[tuple[int, ModelIn]]:
    """The shards an input of the model step goes to, with what each of them gets."""
    if shards == 1:
        return [(0, item)]
    if isinstance(item, Featured):
        return [(shard_of(item.transaction.transaction_id, shards), item)]
    if isinstance(item, LabelToLearn):
        home = shard_of(item.transaction_id, shards)
        away = dataclasses.replace(item, home=False)
        return [(i, item if i == home else away) for i in range(shards)]
    return [(i, item) for i in range(shards)]
