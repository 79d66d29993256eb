"""The terminal step: per-terminal features, confirmed frauds, and the features that wait
for labels.

The features recorded when a transaction is scored wait at its terminal until its label
comes (or until it is presumed legitimate): the model learns from what it saw then.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.contracts import RejectReason
from detector.events import burst_events, burst_reason, new_burst_watch
from detector.items import Featured, LabelToLearn, Rejected, RoutedLabel, TerminalIn, TerminalOut
from detector.settings import ScoringSettings
from detector.waiting import StoredPending
from models import FEATURES, PendingFeatures, TerminalProfile
from models.bursts import BurstWatch

DAY = 86400.0


@dataclass
class TerminalState:
    """Per-terminal state: volume, confirmed frauds, features waiting for labels, and
    its bursts (None until its next transaction in a state recovered from before them)."""

    profile: TerminalProfile
    pending: PendingFeatures | StoredPending
    bursts: BurstWatch | None = None


def terminal_idle(state: TerminalState, now: float, config: ScoringSettings) -> bool:
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


def new_pending(terminal_id: str, config: ScoringSettings) -> PendingFeatures | StoredPending:
    """Where a terminal's scored features wait for their labels: on disk in the
    detector's store (``config.waiting_store``), else in memory (offline replays)."""
    if config.waiting_store is not None:
        return StoredPending(
            terminal_id,
            FEATURES,
            config.waiting_store,
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
    state: TerminalState | None, item: TerminalIn, config: ScoringSettings
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
        learn = LabelToLearn(
            label.transaction_id,
            is_fraud,
            label.source,
            features,
            origin=label.provenance,
            labeled_at=label.labeled_at.timestamp(),
        )
        return state, [learn]

    tx = item.transaction
    ts = tx.epoch_seconds
    features = {**item.features, **state.profile.features(ts)}
    state.profile.observe(ts)
    state.pending.record(tx.transaction_id, ts, features)
    out: list[TerminalOut] = [
        LabelToLearn(tx_id, False, "presumed", x) for tx_id, x in state.pending.expire(ts)
    ]
    # bursts: distinct cards and small amounts at this terminal in the last minutes
    if state.bursts is None:
        state.bursts = new_burst_watch(config)
    started = state.bursts.observe(ts, tx.card_id, tx.amount)
    if started:
        out.extend(burst_events(started, tx.terminal_id, state.bursts, ts))
    burst = None
    if config.burst_review_minutes > 0 and state.bursts.active(ts):
        burst = burst_reason(tx.terminal_id, state.bursts, ts)
    out.append(Featured(tx, features, burst))
    return state, out
