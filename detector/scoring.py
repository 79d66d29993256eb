"""The scoring core: per-card state, per-terminal state, then the model.

Three steps, each a pure function of its state and one event, so that the Bytewax
dataflow can key them by card, by terminal and by model, and the offline replay and the
tests can call the very same functions in the same order through ``ScoringCore``.

Transactions go card -> terminal -> model and come out as ``Scored``. Labels go the same
way: the card knows which terminal a transaction used, the terminal keeps the features
recorded when the transaction was scored (and counts confirmed frauds), and the model
learns from those features, however late the label is.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from detector import __version__
from detector.contracts import (
    Alert,
    Control,
    Decision,
    DecisionKind,
    Label,
    ModelQuality,
    ModelStatus,
    RejectReason,
    ThresholdChange,
    Transaction,
    alert_id_for,
)
from detector.decision import Thresholds, VolumeThresholds
from detector.reasons import explain
from detector.settings import Settings
from detector.waiting import StoredPending, StoredScores
from models import (
    CLASSIFIERS,
    FEATURES,
    CardProfile,
    HybridScore,
    HybridScorer,
    LabelledOutcome,
    PendingFeatures,
    QualityTracker,
    TerminalProfile,
)
from models.ranking import average_precision, roc_auc

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The scoring core's knobs (a picklable subset of ``Settings``)."""

    card_history_days: float = 30.0
    card_history_max: int = 1000
    terminal_history_days: float = 28.0
    label_horizon_days: float = 45.0
    pending_max_per_terminal: int = 100_000
    presume_legit_days: float = 0.0
    label_park_seconds: float = 600.0
    threshold_mode: str = "volume"
    review_threshold: float = 0.6
    block_threshold: float = 0.9
    review_share: float = 0.01
    block_share: float = 0.001
    warmup_frauds: int = 50
    classifier: str = "logreg"
    challengers: tuple[str, ...] = ()
    quality_window: int = 5000
    shards: int = 1
    # The detector's store of features waiting for labels (None: in memory)
    waiting_store: str | None = None
    waiting_cache_mb: int = 256

    @property
    def model_kinds(self) -> tuple[str, ...]:
        """The classifier kinds to run, the deciding one at start first, each once."""
        return tuple(dict.fromkeys((self.classifier, *self.challengers)))

    def evaluation(self) -> CoreConfig:
        """The same core for an offline replay, where every label is explicit."""
        return dataclasses.replace(self, presume_legit_days=0.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        return cls(
            card_history_days=settings.card_history_days,
            card_history_max=settings.card_history_max,
            terminal_history_days=settings.terminal_history_days,
            label_horizon_days=settings.label_horizon_days,
            pending_max_per_terminal=settings.pending_max_per_terminal,
            presume_legit_days=settings.presume_legit_days,
            label_park_seconds=settings.label_park_seconds,
            threshold_mode=settings.threshold_mode,
            review_threshold=settings.review_threshold,
            block_threshold=settings.block_threshold,
            review_share=settings.review_share,
            block_share=settings.block_share,
            warmup_frauds=settings.classifier_warmup_frauds,
            classifier=settings.classifier,
            challengers=tuple(settings.challengers),
            quality_window=settings.quality_window,
            shards=settings.shards,
            waiting_cache_mb=settings.waiting_cache_mb,
        )


# --- what flows between the steps ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """The Kafka record an event came from, kept for its dead letter if one is needed."""

    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class CardFeatured:
    """A transaction with its card features (card step -> terminal step)."""

    transaction: Transaction
    features: dict[str, float]


@dataclass(slots=True)
class Featured:
    """A transaction with all its features (terminal step -> model step)."""

    transaction: Transaction
    features: dict[str, float]


@dataclass(slots=True)
class RoutedLabel:
    """A label with what the card knew of its transaction (card step -> terminal step)."""

    label: Label
    terminal_id: str
    transaction_time: float
    origin: Origin | None = None


@dataclass(slots=True)
class LabelToLearn:
    """Features recorded at scoring time and the truth about them (-> model step).

    With several model shards, every shard learns every label; ``home`` marks the copy
    in the shard that scored the transaction, which counts it (see ``to_shards``).
    """

    transaction_id: str
    is_fraud: bool
    source: str
    features: dict[str, float]
    home: bool = True


@dataclass(slots=True)
class Rejected:
    """A valid-looking event the core cannot use; it goes to the dead-letter topic.

    ``origin`` is the Kafka record of the event, when known: its dead letter keeps the
    original bytes and coordinates; otherwise ``payload`` is the event re-serialised.
    ``control`` marks a rejected control message (its dead letter names the control
    topic).
    """

    reason: RejectReason
    error: str
    payload: bytes
    control: bool = False
    origin: Origin | None = None


@dataclass(slots=True)
class Scored:
    """The outcome for one transaction: what the dataflow publishes."""

    transaction: Transaction
    features: dict[str, float]
    parts: HybridScore
    decision: DecisionKind
    reasons: list[str]
    model_name: str
    model_version: str
    scored_at: datetime
    # The decision already published for this transaction before a crash, if any: what
    # is published again, byte for byte (see ``of_record``).
    record: bytes | None = None

    @property
    def score(self) -> float:
        if self.record is not None:
            return self.to_decision().score
        return min(1.0, max(0.0, self.parts.score))

    def of_record(self, record: bytes) -> Scored:
        """This outcome as the decision of record ``record`` (a published ``Decision``)
        says: a transaction decided again after a crash keeps the decision it had."""
        published = Decision.model_validate_json(record)
        return dataclasses.replace(
            self,
            decision=published.decision,
            reasons=list(published.reasons),
            model_name=published.model_name,
            model_version=published.model_version,
            scored_at=published.scored_at,
            record=record,
        )

    def to_decision(self) -> Decision:
        if self.record is not None:
            return Decision.model_validate_json(self.record)
        tx = self.transaction
        return Decision(
            transaction_id=tx.transaction_id,
            card_id=tx.card_id,
            terminal_id=tx.terminal_id,
            amount=tx.amount,
            score=self.score,
            decision=self.decision,
            reasons=self.reasons,
            model_name=self.model_name,
            model_version=self.model_version,
            transaction_time=tx.timestamp,
            scored_at=self.scored_at,
        )

    def to_alert(self) -> Alert | None:
        if self.decision == "allow":
            return None
        return Alert(
            alert_id=alert_id_for(self.transaction.card_id, self.transaction.transaction_id),
            transaction=self.transaction,
            score=self.score,
            decision=self.decision,
            reasons=self.reasons,
            features=self.features,
            model_name=self.model_name,
            model_version=self.model_version,
            created_at=self.scored_at,
        )


@dataclass(slots=True)
class Learned:
    """A label the model learned from."""

    transaction_id: str
    is_fraud: bool
    source: str


@dataclass(slots=True)
class ControlApplied:
    """A control message the model step applied (the dataflow then reports its status)."""

    control: Control


CardOut = CardFeatured | RoutedLabel | Rejected
TerminalIn = CardFeatured | RoutedLabel
TerminalOut = Featured | LabelToLearn | Rejected
ModelIn = Featured | LabelToLearn | Control
ModelOut = Scored | Learned | ControlApplied | Rejected


# --- keyed state ---------------------------------------------------------------------


@dataclass
class CardState:
    """Per-card state: the feature history and the transactions it may still be asked of."""

    # the card's history and the ids of its transactions over the label horizon (which
    # drop duplicates and tell a late label which terminal its transaction used)
    profile: CardProfile
    # labels that arrived before their transaction, by transaction id
    parked: collections.OrderedDict[str, Parked] = field(default_factory=collections.OrderedDict)

    @property
    def empty(self) -> bool:
        """Nothing left that can matter: no history, no label waiting."""
        return not self.parked and self.profile.ids_held == 0 and len(self.profile) == 0


@dataclass(slots=True)
class Parked:
    """A label waiting for its transaction, since ``since`` (its record's time)."""

    label: Label
    since: float
    origin: Origin | None = None


@dataclass
class TerminalState:
    """Per-terminal state: volume, confirmed frauds, features waiting for labels."""

    profile: TerminalProfile
    pending: PendingFeatures | StoredPending


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


# --- the three steps -----------------------------------------------------------------


MAX_PARKED_LABELS_PER_CARD = 100


def card_step(
    state: CardState | None,
    event: Transaction | Label,
    config: CoreConfig,
    *,
    origin: Origin | None = None,
    received: float = 0.0,
) -> tuple[CardState, list[CardOut]]:
    """One event of a card; ``origin`` and ``received`` (its Kafka record and that
    record's time) go with a label that has to wait, and into dead letters."""
    if state is None:
        state = CardState(
            CardProfile(
                config.card_history_days,
                config.card_history_max,
                label_horizon_days=config.label_horizon_days,
            )
        )
    if isinstance(event, Label):
        return state, _route_label(state, Parked(event, received, origin), config)

    tx = event
    if state.profile.knows(tx.transaction_id) is not None:
        return state, [
            Rejected(
                RejectReason.DUPLICATE,
                f"transaction {tx.transaction_id!r} was already decided",
                tx.model_dump_json().encode(),
                origin=origin,
            )
        ]
    ts = tx.epoch_seconds
    features = state.profile.features(ts, tx.amount, tx.terminal_id)
    state.profile.observe(ts, tx.amount, tx.terminal_id, transaction_id=tx.transaction_id)
    out: list[CardOut] = [CardFeatured(tx, features)]
    if state.parked:
        out.extend(_release_parked(state, tx, ts, config))
    return state, out


def _route_label(state: CardState, parked: Parked, config: CoreConfig) -> list[CardOut]:
    label = parked.label
    known = state.profile.knows(label.transaction_id)
    if known is not None:
        state.profile.record_label(label.transaction_id, known[0], is_fraud=label.label == "fraud")
        return [RoutedLabel(label, known[1], known[0], parked.origin)]
    latest = state.profile.last_seen
    if latest is not None and latest >= label.labeled_at.timestamp():
        return [_unknown(parked, config)]
    # The card has not reached the label's time yet: its transaction may still be on the
    # way (a backlog, or labels read ahead of transactions). Hold the label until then,
    # or until ``label_park_seconds`` have passed (see ``expire_parked``).
    state.parked[label.transaction_id] = parked
    if len(state.parked) > MAX_PARKED_LABELS_PER_CARD:
        _, oldest = state.parked.popitem(last=False)
        return [_unknown(oldest, config)]
    return []


def _release_parked(
    state: CardState, tx: Transaction, ts: float, config: CoreConfig
) -> list[CardOut]:
    """Route labels that waited for ``tx``; give up on those the card has passed."""
    out: list[CardOut] = []
    waiting = state.parked.pop(tx.transaction_id, None)
    if waiting is not None:
        is_fraud = waiting.label.label == "fraud"
        state.profile.record_label(tx.transaction_id, ts, is_fraud=is_fraud)
        out.append(RoutedLabel(waiting.label, tx.terminal_id, ts, waiting.origin))
    passed = [t for t, p in state.parked.items() if p.label.labeled_at.timestamp() < ts]
    for tx_id in passed:
        out.append(_unknown(state.parked.pop(tx_id), config))
    return out


def parked_until(state: CardState, config: CoreConfig) -> float | None:
    """When the card's longest-waiting label gives up (record time), if one waits."""
    if not state.parked:
        return None
    return min(p.since for p in state.parked.values()) + config.label_park_seconds


def expire_parked(state: CardState, now: float, config: CoreConfig) -> list[Rejected]:
    """Give up on the labels that have waited ``label_park_seconds`` by ``now``."""
    cutoff = now - config.label_park_seconds
    gone = [t for t, p in state.parked.items() if p.since <= cutoff]
    return [_unknown(state.parked.pop(t), config, waited=True) for t in gone]


def _unknown(parked: Parked, config: CoreConfig, *, waited: bool = False) -> Rejected:
    label = parked.label
    if waited:
        why = (
            f"no transaction {label.transaction_id!r} of card {label.card_id!r} arrived "
            f"within {config.label_park_seconds:g} s of its label"
        )
    else:
        why = (
            f"no transaction {label.transaction_id!r} of card {label.card_id!r} within the "
            f"last {config.label_horizon_days:g} days, nor before the card's transactions "
            f"passed the label's time"
        )
    return Rejected(
        RejectReason.UNKNOWN_TRANSACTION,
        why,
        label.model_dump_json().encode(),
        origin=parked.origin,
    )


def card_idle(state: CardState, now: float, config: CoreConfig) -> bool:
    """Nothing of the card can still matter at event time ``now``: no label waits, and
    its last transaction is older than its history and the label horizon."""
    last = state.profile.last_seen
    keep = max(config.card_history_days, config.label_horizon_days) * DAY
    return not state.parked and (last is None or last < now - keep)


def terminal_idle(state: TerminalState, now: float, config: CoreConfig) -> bool:
    """Nothing of the terminal can still matter at event time ``now``: no transaction in
    its history window, and none that may still get a label (see ``StoredPending``)."""
    last = state.profile.last_seen
    if last is not None and last >= now - config.terminal_history_days * DAY:
        return False
    pending = state.pending
    if isinstance(pending, StoredPending):
        return pending.idle(now)
    return len(pending) == 0


def terminal_key(item: TerminalIn) -> str:
    """The terminal a card step's output belongs to."""
    return item.terminal_id if isinstance(item, RoutedLabel) else item.transaction.terminal_id


def new_pending(terminal_id: str, config: CoreConfig) -> PendingFeatures | StoredPending:
    """Where a terminal's scored features wait for their labels: on disk in the
    detector's store (``config.waiting_store``), else in memory (offline replays)."""
    if config.waiting_store is not None:
        return StoredPending(
            terminal_id,
            FEATURES,
            Path(config.waiting_store),
            config.waiting_cache_mb,
            horizon_days=config.label_horizon_days,
            presume_legit_days=config.presume_legit_days,
        )
    return PendingFeatures(
        FEATURES,
        horizon_days=config.label_horizon_days,
        max_entries=config.pending_max_per_terminal,
        presume_legit_days=config.presume_legit_days,
    )


def terminal_step(
    state: TerminalState | None, item: TerminalIn, config: CoreConfig
) -> tuple[TerminalState, list[TerminalOut]]:
    if state is None:
        state = TerminalState(
            TerminalProfile(config.terminal_history_days), new_pending(terminal_key(item), config)
        )
    if isinstance(item, RoutedLabel):
        label = item.label
        is_fraud = label.label == "fraud"
        state.profile.record_label(label.transaction_id, item.transaction_time, is_fraud=is_fraud)
        features = state.pending.get(label.transaction_id)
        if features is None:
            return state, [
                Rejected(
                    RejectReason.UNKNOWN_TRANSACTION,
                    f"features of transaction {label.transaction_id!r} are no longer kept",
                    label.model_dump_json().encode(),
                    origin=item.origin,
                )
            ]
        state.pending.mark_labelled(label.transaction_id)
        return state, [LabelToLearn(label.transaction_id, is_fraud, label.source, features)]

    tx = item.transaction
    ts = tx.epoch_seconds
    features = {**item.features, **state.profile.features(ts)}
    state.profile.observe(ts)
    state.pending.record(tx.transaction_id, ts, features)
    out: list[TerminalOut] = [
        LabelToLearn(tx_id, False, "presumed", x) for tx_id, x in state.pending.expire(ts)
    ]
    out.append(Featured(tx, features))
    return state, out


def model_step(
    state: ModelState | None, item: ModelIn, config: CoreConfig, *, origin: Origin | None = None
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


def _score(state: ModelState, item: Featured, config: CoreConfig) -> Scored:
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


def new_thresholds(config: CoreConfig) -> tuple[Thresholds | VolumeThresholds, VolumeThresholds]:
    """The thresholds in force at start, and the window of scores (see ``ModelSlot``)."""
    fixed = Thresholds(config.review_threshold, config.block_threshold)
    window = VolumeThresholds(config.review_share, config.block_share, fallback=fixed)
    return (fixed if config.threshold_mode == "fixed" else window), window


def model_name(kind: str) -> str:
    """The published name of the hybrid model with classifier ``kind``."""
    return f"hybrid-tail-{kind}"


def new_model_slot(kind: str, config: CoreConfig) -> ModelSlot:
    in_force, window = new_thresholds(config)
    return ModelSlot(
        name=model_name(kind),
        scorer=HybridScorer(classifier=CLASSIFIERS[kind](), warmup_frauds=config.warmup_frauds),
        thresholds=in_force,
        quality=QualityTracker(
            shard_window(config),
            horizon_days=config.label_horizon_days,
            scores=(
                StoredScores(model_name(kind), Path(config.waiting_store), config.waiting_cache_mb)
                if config.waiting_store is not None
                else None
            ),
        ),
        window=window,
    )


def new_model_state(config: CoreConfig) -> ModelState:
    slots = [new_model_slot(kind, config) for kind in config.model_kinds]
    return ModelState(models={slot.name: slot for slot in slots}, deciding=slots[0].name)


def ensure_models(state: ModelState, config: CoreConfig) -> ModelState:
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


def shard_window(config: CoreConfig) -> int:
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


@dataclass(slots=True)
class SlotSummary:
    """What one shard knows of one model, for its status."""

    name: str
    transactions_scored: int
    decisions: dict[str, int]
    labels_learned: dict[str, int]
    classifier_weight: float
    outcomes: list[LabelledOutcome]
    volume: bool
    review: float
    block: float
    review_share: float | None
    block_share: float | None


@dataclass(slots=True)
class ShardSummary:
    """What one shard of the model step knows, for the models' status."""

    shard: int
    version: str
    deciding: str
    slots: list[SlotSummary]
    labels_by_source: dict[str, int]
    last_control_id: str | None
    last_label_at: float | None


def summarize(state: ModelState, shard: int = 0) -> ShardSummary:
    """A shard's models as counters and quality windows (small, and picklable)."""
    slots = []
    for slot in state.models.values():
        th = slot.thresholds
        volume = isinstance(th, VolumeThresholds)
        slots.append(
            SlotSummary(
                name=slot.name,
                transactions_scored=slot.transactions_scored,
                decisions=dict(slot.decisions),
                labels_learned=slot.scorer.labels_learned,
                classifier_weight=slot.scorer.classifier_weight(),
                outcomes=slot.quality.window(),
                volume=volume,
                review=float(th.review),
                block=float(th.block),
                review_share=th.review_share if isinstance(th, VolumeThresholds) else None,
                block_share=th.block_share if isinstance(th, VolumeThresholds) else None,
            )
        )
    return ShardSummary(
        shard=shard,
        version=state.version,
        deciding=state.deciding,
        slots=slots,
        labels_by_source=dict(state.labels_by_source),
        last_control_id=state.last_control_id,
        last_label_at=state.last_label_at,
    )


# --- status ----------------------------------------------------------------------------


def model_quality(tracker: QualityTracker) -> ModelQuality:
    """Quality figures over the tracker's window (``None`` where undefined)."""
    return quality_of(tracker.window())


def quality_of(window: Sequence[LabelledOutcome]) -> ModelQuality:
    """Quality figures over labelled outcomes (``None`` where undefined)."""
    n = len(window)
    frauds = sum(o.is_fraud for o in window)
    alerted = sum(o.alerted for o in window)
    caught = sum(o.alerted and o.is_fraud for o in window)
    auc: float | None = None
    ap: float | None = None
    if 0 < frauds < n:
        truth = [o.is_fraud for o in window]
        scores = [min(1.0, max(0.0, o.score)) for o in window]
        auc = roc_auc(truth, scores)
        ap = average_precision(truth, scores)
    return ModelQuality(
        window=n,
        frauds=frauds,
        auc=auc,
        average_precision=ap,
        alert_precision=caught / alerted if alerted else None,
        alert_recall=caught / frauds if frauds else None,
    )


def model_statuses(state: ModelState, now: datetime | None = None) -> list[ModelStatus]:
    """One status per model, the deciding model first."""
    return merge_statuses([summarize(state)], now)


def merge_statuses(
    summaries: Sequence[ShardSummary], now: datetime | None = None
) -> list[ModelStatus]:
    """One status per model over every shard, the deciding model first.

    Counts add up, but a label, which every shard learns, counts once; the quality
    figures are over the shards' windows together; the thresholds are the shards'
    average (the same value under fixed thresholds).
    """
    now = now or datetime.now(UTC)
    first = summaries[0]
    last = max((s.last_label_at for s in summaries if s.last_label_at is not None), default=None)
    by_source: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        by_source.update(summary.labels_by_source)
    names = [first.deciding] + [s.name for s in first.slots if s.name != first.deciding]
    out = []
    for name in names:
        slots = [slot for summary in summaries for slot in summary.slots if slot.name == name]
        head = slots[0]
        decisions: collections.Counter[str] = collections.Counter()
        outcomes: list[LabelledOutcome] = []
        for slot in slots:
            decisions.update(slot.decisions)
            outcomes.extend(slot.outcomes)
        out.append(
            ModelStatus(
                model_name=name,
                model_version=first.version,
                deciding=name == first.deciding,
                transactions_scored=sum(slot.transactions_scored for slot in slots),
                decisions=dict(decisions),
                labels_learned=head.labels_learned,  # every shard learns every label
                labels_by_source=dict(by_source),
                classifier_weight=sum(slot.classifier_weight for slot in slots) / len(slots),
                quality=quality_of(outcomes),
                threshold_mode="volume" if head.volume else "fixed",
                review_threshold=sum(slot.review for slot in slots) / len(slots),
                block_threshold=sum(slot.block for slot in slots) / len(slots),
                review_share=head.review_share,
                block_share=head.block_share,
                last_control_id=first.last_control_id,
                last_label_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
                emitted_at=now,
            )
        )
    return out


# --- the same steps in one process -----------------------------------------------------


class ScoringCore:
    """All state in one object, for the offline replay and the tests.

    ``process`` runs an event through the same three steps the dataflow runs, in the
    same order, and returns what the dataflow would publish. A ``Control`` goes straight
    to the model step, as in the dataflow.
    """

    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.cards: dict[str, CardState] = {}
        self.terminals: dict[str, TerminalState] = {}
        # the model step's shards (one unless ``config.shards`` says more)
        self.shards: list[ModelState] = [
            new_model_state(self.config) for _ in range(self.config.shards)
        ]

    @property
    def model(self) -> ModelState:
        """The model step's state (the first shard's, with several)."""
        return self.shards[0]

    @model.setter
    def model(self, state: ModelState) -> None:
        self.shards[0] = state

    def _model_step(self, item: ModelIn) -> list[ModelOut]:
        out: list[ModelOut] = []
        for shard, routed in to_shards(item, self.config.shards):
            self.shards[shard], shard_out = model_step(self.shards[shard], routed, self.config)
            out.extend(shard_out)
        # Every shard applies a control message alike: one outcome says it.
        return out[:1] if isinstance(item, Control) else out

    def process(self, event: Transaction | Label | Control) -> list[ModelOut | Rejected]:
        if isinstance(event, Control):
            return list(self._model_step(event))
        card_id = event.card_id
        self.cards[card_id], card_out = card_step(self.cards.get(card_id), event, self.config)
        results: list[ModelOut | Rejected] = []
        for item in card_out:
            if isinstance(item, Rejected):
                results.append(item)
                continue
            terminal_id = terminal_key(item)
            self.terminals[terminal_id], terminal_out = terminal_step(
                self.terminals.get(terminal_id), item, self.config
            )
            for routed in terminal_out:
                if isinstance(routed, Rejected):
                    results.append(routed)
                    continue
                results.extend(self._model_step(routed))
        return results

    def apply(self, control: Control) -> ControlApplied | Rejected:
        """Apply a control message, as the dataflow's model step does."""
        [out] = self.process(control)
        assert isinstance(out, ControlApplied | Rejected)
        return out

    def statuses(self) -> list[ModelStatus]:
        """What the dataflow would publish on ``model-status`` now."""
        return merge_statuses([summarize(state, i) for i, state in enumerate(self.shards)])

    def score(self, tx: Transaction) -> Scored:
        """Score one transaction; raises if the core rejects it (a duplicate)."""
        for out in self.process(tx):
            if isinstance(out, Scored):
                return out
            if isinstance(out, Rejected) and out.reason is RejectReason.DUPLICATE:
                raise ValueError(out.error)
        raise AssertionError("a transaction always yields a Scored or a Rejected")

    def learn(self, label: Label) -> Learned | Rejected | None:
        """Learn from a label; None while it waits for its transaction."""
        for out in self.process(label):
            if isinstance(out, Learned | Rejected):
                return out
        return None
