"""The card step: per-card features, duplicates, and where a card's labels go.

Each card keeps its recent transactions (the features of the next one are computed from
them) and the ids of its transactions over the label horizon: a transaction seen before
is a duplicate, and a label learns which terminal its transaction used. A label that
arrives before its transaction waits on the card (``Parked``) for a while.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from detector.contracts import Label, RejectReason, Transaction
from detector.items import CardFeatured, CardOut, Origin, Rejected, RoutedLabel
from detector.settings import ScoringSettings
from models import CardProfile

DAY = 86400.0
MAX_PARKED_LABELS_PER_CARD = 100


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


def card_step(
    state: CardState | None,
    event: Transaction | Label,
    config: ScoringSettings,
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


def _route_label(state: CardState, parked: Parked, config: ScoringSettings) -> list[CardOut]:
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
    state: CardState, tx: Transaction, ts: float, config: ScoringSettings
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


def parked_until(state: CardState, config: ScoringSettings) -> float | None:
    """When the card's longest-waiting label gives up (record time), if one waits."""
    if not state.parked:
        return None
    return min(p.since for p in state.parked.values()) + config.label_park_seconds


def expire_parked(state: CardState, now: float, config: ScoringSettings) -> list[Rejected]:
    """Give up on the labels that have waited ``label_park_seconds`` by ``now``."""
    cutoff = now - config.label_park_seconds
    gone = [t for t, p in state.parked.items() if p.since <= cutoff]
    return [_unknown(state.parked.pop(t), config, waited=True) for t in gone]


def _unknown(parked: Parked, config: ScoringSettings, *, waited: bool = False) -> Rejected:
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


def card_idle(state: CardState, now: float, config: ScoringSettings) -> bool:
    """Nothing of the card can still matter at event time ``now``: no label waits, and
    its last transaction is older than its history and the label horizon."""
    last = state.profile.last_seen
    keep = max(config.card_history_days, config.label_horizon_days) * DAY
    return not state.parked and (last is None or last < now - keep)
