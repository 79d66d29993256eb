"""Detector events: what the terminal and model steps notice, as ``DetectorEvent`` records.

The terminal step watches each terminal for bursts (``models.bursts.BurstWatch``):
``terminal_burst`` and ``card_testing``; while a terminal is in one, its transactions go
to review whatever the thresholds say, with a reason naming the burst. The model step
watches the deciding model's scores, the features and the share of frauds among new
labels (``models.drift.MeanShift``): ``score_shift``, ``feature_shift`` and
``fraud_rate_change``. With several model shards only the first watches: each shard sees
a random share of the traffic, and one event per change is enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from detector.contracts import EVENT_SUBJECTS_LIMIT, DetectorEvent, event_id_for
from detector.items import LabelToLearn, Noticed
from detector.settings import ScoringSettings
from models.bursts import BURST, BurstWatch
from models.drift import MeanShift, Shift

# The subjects of the model step's shifts that are not features.
SCORE = "score"
FRAUD_RATE = "fraud_rate"


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _minutes(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes == int(minutes):
        return f"{int(minutes)} minute{'s' if minutes != 1 else ''}"
    return f"{minutes:g} minutes"


def _clock(ts: float) -> str:
    return f"{_at(ts):%Y-%m-%d %H:%M} UTC"


# --- the terminal step: bursts ----------------------------------------------------------


def new_burst_watch(config: ScoringSettings) -> BurstWatch:
    window = config.burst_window_minutes * 60.0
    return BurstWatch(
        window_seconds=window,
        min_cards=config.burst_min_cards,
        ratio=config.burst_ratio,
        small_amount=config.burst_small_amount,
        min_small=config.burst_min_small,
        # a burst stays on for at least a window: it is reported once
        hold_seconds=max(window, config.burst_review_minutes * 60.0),
    )


def _what(kind: str, count: int, watch: BurstWatch) -> str:
    if kind == BURST:
        return f"{count} cards in {_minutes(watch.window_seconds)}"
    return (
        f"{count} amounts of {watch.small_amount:,.2f} or less in {_minutes(watch.window_seconds)}"
    )


def _usual(watch: BurstWatch) -> str:
    usual = watch.usual
    return f"usually {usual:.0f} card{'s' if round(usual) != 1 else ''}"


def burst_events(
    kinds: tuple[str, ...], terminal_id: str, watch: BurstWatch, ts: float
) -> list[Noticed]:
    """The events of the bursts that started at ``ts`` at ``terminal_id``."""
    out = []
    for kind in kinds:
        since, _, _ = watch.burst(kind) or (ts, ts, 0)
        count = watch.cards_in_window if kind == BURST else watch.small_in_window
        usual = watch.usual
        out.append(
            Noticed(
                DetectorEvent(
                    event_id=event_id_for(kind, terminal_id, _at(since)),
                    kind=kind,  # type: ignore[arg-type]
                    subject=terminal_id,
                    summary=(
                        f"terminal {terminal_id}: {_what(kind, count, watch)} since "
                        f"{_clock(since)}, {_usual(watch)}"
                    )[:512],
                    before=round(usual, 3),
                    after=float(count),
                    change=round(count - usual, 3),
                    unit="cards" if kind == BURST else "small amounts",
                    since=_at(since),
                    detected_at=_at(ts),
                    terminals=[terminal_id],
                    cards=watch.top_cards(EVENT_SUBJECTS_LIMIT),
                    emitted_at=datetime.now(UTC),
                )
            )
        )
    return out


def burst_reason(terminal_id: str, watch: BurstWatch, ts: float) -> str | None:
    """Why a transaction at a terminal in a burst goes to review (None: it is not in one)."""
    for kind in (BURST, "card_testing"):
        burst = watch.burst(kind)
        if burst is not None and watch.on(kind, ts):
            since, _, peak = burst
            return (
                f"terminal {terminal_id}: {_what(kind, peak, watch)} since {_clock(since)}, "
                f"{_usual(watch)}: reviewed while the burst lasts"
            )
    return None


# --- the model step: shifts ---------------------------------------------------------------


# Features that keep growing for days after the detector starts, as the cards' histories
# fill (a maximum and a count over the last 7 days): a ramp, not a shift of the traffic.
# A shift of amounts shows in the amounts and their ratios to the card's habits.
UNWATCHED_FEATURES = frozenset({"card_max_ratio_7d", "card_large_7d"})


@dataclass
class DriftWatch:
    """What the model step watches: the deciding model's scores, a sample of the
    features, and the share of frauds among new labels."""

    scores: MeanShift
    features: MeanShift
    labels: MeanShift
    scored: int = 0


def new_drift_watch(config: ScoringSettings) -> DriftWatch:
    interval, count, threshold = (
        config.events_interval_seconds,
        config.events_min_count,
        config.events_threshold,
    )
    return DriftWatch(
        scores=MeanShift(interval, count, threshold),
        # a sample of the transactions: intervals as many times longer, as many values
        features=MeanShift(interval * config.events_feature_sample, count, threshold),
        labels=MeanShift(config.events_label_interval_seconds, count, threshold, warmup=500),
    )


def watch_scored(
    watch: DriftWatch,
    ts: float,
    score: float,
    features: dict[str, float],
    model_name: str,
    config: ScoringSettings,
) -> list[Noticed]:
    """Count a scored transaction: the shifts it completes, as events."""
    shift = watch.scores.observe_one(ts, SCORE, score)
    shifts = [shift] if shift is not None else []
    watch.scored += 1
    if watch.scored % config.events_feature_sample == 0:
        # on a log scale: amounts and ratios have long tails, and one large value in an
        # interval is not a shift
        logged = {
            name: math.copysign(math.log1p(abs(x)), x)
            for name, x in features.items()
            if name not in UNWATCHED_FEATURES
        }
        shifts += watch.features.observe(ts, logged)
    return [_shift_event(shift, ts, model_name) for shift in shifts] if shifts else []


def watch_label(watch: DriftWatch, item: LabelToLearn, model_name: str) -> list[Noticed]:
    """Count an explicit label (presumed ones say nothing of the fraud rate)."""
    if item.labeled_at is None or item.source == "presumed":
        return []
    shift = watch.labels.observe_one(item.labeled_at, FRAUD_RATE, float(item.is_fraud))
    return [_shift_event(shift, item.labeled_at, model_name)] if shift is not None else []


def _unlog(y: float) -> float:
    return math.copysign(math.expm1(min(abs(y), 700.0)), y)


def _shift_event(shift: Shift, ts: float, model_name: str) -> Noticed:
    name, before, after = shift.name, shift.before, shift.after
    if name == SCORE:
        kind, what = "score_shift", f"{model_name}: mean score"
    elif name == FRAUD_RATE:
        kind, what = "fraud_rate_change", "share of frauds among new labels"
    else:  # watched on a log scale: the typical value (its geometric mean, near enough)
        kind, what = "feature_shift", f"feature {name}: typical value"
        before, after = _unlog(before), _unlog(after)
    summary = (
        f"{what} {after:,.3g} over {shift.values} since {_clock(shift.since)}, usually "
        f"{before:,.3g} ({after - before:+,.3g}, {abs(shift.z):.1f} standard errors)"
    )
    return Noticed(
        DetectorEvent(
            event_id=event_id_for(kind, name, _at(shift.since)),
            kind=kind,  # type: ignore[arg-type]
            subject=name[:128],
            summary=summary[:512],
            before=round(before, 6),
            after=round(after, 6),
            change=round(after - before, 6),
            unit="difference",
            since=_at(shift.since),
            detected_at=_at(ts),
            model_name=model_name if kind != "feature_shift" else None,
            emitted_at=datetime.now(UTC),
        )
    )
