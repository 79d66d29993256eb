"""The models' status: each shard's summary of its models, merged into one status per
model, with quality figures over the labelled transactions.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from detector.contracts import (
    CheckpointInfo,
    ModelQuality,
    ModelSpec,
    ModelStatus,
    OriginQuality,
    PolicyStatus,
    QualityPoint,
)
from detector.decision import CapacityThresholds, Thresholds, VolumeThresholds
from detector.policy import merge_policy
from detector.scoring import ModelState
from models import LabelledOutcome, QualityTracker
from models.quality import QualityMinimum, figures_from_counts, figures_of, traffic_estimate
from models.quality import QualityPoint as TrendPoint


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
    calibration_labels: int
    calibration_error: float | None
    # capacity mode: this shard's share of the capacity, and its alerts in the last hour
    capacity: float | None = None
    alerts_last_hour: int | None = None
    # labels whose verdict a later label replaced, by the class they had (this shard's)
    relabelled: dict[str, int] = field(default_factory=dict)
    minimum: QualityMinimum = field(default_factory=QualityMinimum)
    trend: list[TrendPoint] = field(default_factory=list)
    # which model and version, and the checkpoints it can be rolled back to
    version: str = ""
    spec: ModelSpec | None = None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)

    @property
    def mode(self) -> Literal["capacity", "volume", "fixed"]:
        if self.capacity is not None:
            return "capacity"
        return "volume" if self.volume else "fixed"


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
    policy: PolicyStatus | None = None
    # the exploration sample: allowed transactions offered to it, and chosen
    explored_seen: int = 0
    explored_chosen: int = 0


def summarize(state: ModelState, shard: int = 0, now: float | None = None) -> ShardSummary:
    """A shard's models as counters and quality windows (small, and picklable).

    At status time, each model's quality trend gains a point if labels arrived since
    its last (at ``now``, default the wall clock).
    """
    at = time.time() if now is None else now
    slots = []
    for slot in state.models.values():
        slot.quality.mark(at)
        th = slot.thresholds
        volume = isinstance(th, VolumeThresholds)
        capacity = th if isinstance(th, CapacityThresholds) else None
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
                review_share=None if isinstance(th, Thresholds) else th.review_share,
                block_share=th.block_share if isinstance(th, VolumeThresholds) else None,
                capacity=capacity.budget if capacity is not None else None,
                alerts_last_hour=capacity.alerts_last_hour if capacity is not None else None,
                calibration_labels=slot.calibrator.labels_learned,
                calibration_error=slot.calibrator.calibration_error(),
                relabelled=slot.quality.relabelled,
                minimum=slot.quality.minimum,
                trend=slot.quality.trend(),
                version=slot.version,
                spec=slot.spec,
                checkpoints=list(slot.checkpoints.saved),
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
        policy=state.policy.status(),
        explored_seen=state.exploration.seen,
        explored_chosen=state.exploration.chosen,
    )


def model_quality(tracker: QualityTracker) -> ModelQuality:
    """Quality figures over the tracker's window (``None`` where undefined, or below the
    tracker's minimum)."""
    return quality_of(tracker.window(), tracker.minimum)


def quality_of(
    window: Sequence[LabelledOutcome],
    minimum: QualityMinimum | None = None,
    *,
    decisions: dict[str, int] | None = None,
    exploration: tuple[int, int] | None = None,
) -> ModelQuality:
    """Quality figures over labelled outcomes (``None`` where undefined, or over fewer
    labels than ``minimum`` asks), with the counts and label sources behind them.

    The figures by origin keep the exploration sample's apart from the alerted labels;
    given the model's ``decisions`` and the exploration sample's counts (allowed
    transactions offered, chosen), the estimates over the whole traffic too."""
    least = minimum or QualityMinimum(0, 0, 0, 0)
    f = figures_of(window, least)
    sources = collections.Counter(o.source or "unknown" for o in window)
    by_origin: dict[str, list[LabelledOutcome]] = collections.defaultdict(list)
    for outcome in window:
        by_origin[_origin(outcome)].append(outcome)
    origins = {}
    for origin, outcomes in sorted(by_origin.items()):
        g = figures_of(outcomes, least)
        origins[origin] = OriginQuality(
            labels=g.window,
            frauds=g.frauds,
            alerts=g.alerts,
            auc=g.auc,
            alert_precision=g.alert_precision,
        )
    total = sum((decisions or {}).values())
    alerted = total - (decisions or {}).get("allow", 0)
    estimate = traffic_estimate(
        window,
        alerted_share=alerted / total if total else None,
        alert_precision=f.alert_precision,
        minimum=least,
    )
    seen, chosen = exploration or (0, 0)
    return ModelQuality(
        window=f.window,
        frauds=f.frauds,
        legit=f.legit,
        alerts=f.alerts,
        sources=dict(sorted(sources.items())),
        min_frauds=least.frauds,
        min_legit=least.legit,
        min_alerts=least.alerts,
        auc=f.auc,
        average_precision=f.average_precision,
        alert_precision=f.alert_precision,
        alert_recall=f.alert_recall,
        by_origin=origins,
        min_exploration=least.exploration,
        exploration_share=chosen / seen if seen else None,
        allowed_fraud_rate=estimate.allowed_fraud_rate if exploration is not None else None,
        estimated_recall=estimate.recall if exploration is not None else None,
    )


def _origin(outcome: LabelledOutcome) -> str:
    """The origin a label is counted under: presumed labels and those kept before labels
    said their origin have none of their own."""
    if outcome.origin:
        return outcome.origin
    return "presumed" if outcome.source == "presumed" else "unknown"


def merge_trend(slots: Sequence[SlotSummary]) -> list[QualityPoint]:
    """The shards' quality trends as one: the shards mark their points at each status
    period, so the n-th last points go together; their counts add up, their AUC is
    the average weighed by window size, and each figure is null below the minimum."""
    longest = max((len(slot.trend) for slot in slots), default=0)
    minimum = slots[0].minimum if slots else QualityMinimum()
    out = []
    for back in range(longest, 0, -1):
        points = [slot.trend[-back] for slot in slots if len(slot.trend) >= back]
        window = sum(p.window for p in points)
        ranked = [(p.auc, p.window) for p in points if p.auc is not None]
        weight = sum(n for _, n in ranked)
        auc = sum(a * n for a, n in ranked) / weight if weight else None
        f = figures_from_counts(
            window,
            sum(p.frauds for p in points),
            sum(p.alerts for p in points),
            sum(p.caught for p in points),
            auc,
            None,
            minimum,
        )
        out.append(
            QualityPoint(
                at=datetime.fromtimestamp(max(p.at for p in points), UTC),
                window=f.window,
                frauds=f.frauds,
                legit=f.legit,
                alerts=f.alerts,
                auc=f.auc,
                alert_precision=f.alert_precision,
                alert_recall=f.alert_recall,
            )
        )
    return out


def model_statuses(state: ModelState, now: datetime | None = None) -> list[ModelStatus]:
    """One status per model, the deciding model first."""
    return merge_statuses([summarize(state)], now)


def merge_statuses(
    summaries: Sequence[ShardSummary], now: datetime | None = None
) -> list[ModelStatus]:
    """One status per model over every shard, the deciding model first.

    Counts add up, but a label, which every shard learns, counts once; the quality
    figures are over the shards' windows together; labels learned are net of verdicts
    changed later (a fraud turned legit counts as legit only); the thresholds and shares are the
    shards' average (the same value under fixed thresholds); in capacity mode the
    capacity and the alerts of the last hour add up over the shards.
    """
    now = now or datetime.now(UTC)
    first = summaries[0]
    last = max((s.last_label_at for s in summaries if s.last_label_at is not None), default=None)
    by_source: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        by_source.update(summary.labels_by_source)
    names = [first.deciding] + [s.name for s in first.slots if s.name != first.deciding]
    policies = [s.policy for s in summaries if s.policy is not None]
    policy = merge_policy(policies) if policies else None
    explored = (sum(s.explored_seen for s in summaries), sum(s.explored_chosen for s in summaries))
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
                model_version=head.version or first.version,
                deciding=name == first.deciding,
                transactions_scored=sum(slot.transactions_scored for slot in slots),
                decisions=dict(decisions),
                labels_learned=_net(head.labels_learned, slots),
                labels_by_source=dict(by_source),
                classifier_weight=sum(slot.classifier_weight for slot in slots) / len(slots),
                # the exploration sample is of the deciding model's allowed transactions:
                # the estimates over the whole traffic are its own
                quality=quality_of(
                    outcomes,
                    head.minimum,
                    decisions=dict(decisions),
                    exploration=explored if name == first.deciding else None,
                ),
                trend=merge_trend(slots),
                threshold_mode=head.mode,
                review_threshold=sum(slot.review for slot in slots) / len(slots),
                block_threshold=sum(slot.block for slot in slots) / len(slots),
                review_share=(
                    sum(slot.review_share or 0.0 for slot in slots) / len(slots)
                    if head.review_share is not None
                    else None
                ),
                block_share=head.block_share,
                review_capacity_per_hour=_total(slot.capacity for slot in slots),
                alerts_last_hour=_count(_total(slot.alerts_last_hour for slot in slots)),
                last_control_id=first.last_control_id,
                last_label_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
                emitted_at=now,
                # the policy applies to the deciding model's decisions: reported with it
                policy=policy if name == first.deciding else None,
                # each shard calibrates on the labels of the transactions it scored
                calibration_labels=sum(slot.calibration_labels for slot in slots),
                calibration_error=_weighted_error(slots),
                spec=head.spec,
                checkpoints=_common_checkpoints(slots),
            )
        )
    return out


def _common_checkpoints(slots: Sequence[SlotSummary]) -> list[CheckpointInfo]:
    """The checkpoints every shard of the model has (a roll back restores each shard's
    own), as the first shard saved them."""
    common = set.intersection(*({c.checkpoint_id for c in slot.checkpoints} for slot in slots))
    return [c for c in slots[0].checkpoints if c.checkpoint_id in common]


def _net(learned: dict[str, int], slots: Sequence[SlotSummary]) -> dict[str, int]:
    """Labels learned (every shard learns every label) less the verdicts replaced since
    (each counted in the shard that scored the transaction)."""
    replaced: collections.Counter[str] = collections.Counter()
    for slot in slots:
        replaced.update(slot.relabelled)
    return {label: max(0, n - replaced[label]) for label, n in learned.items()}


def _total(values: Iterable[float | None]) -> float | None:
    """The sum of ``values``, or None when any is unknown."""
    known = list(values)
    if not known or any(v is None for v in known):
        return None
    return sum(v for v in known if v is not None)


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def _weighted_error(slots: Sequence[SlotSummary]) -> float | None:
    """The shards' calibration errors, weighed by the labels each learned."""
    known = [
        (s.calibration_error, s.calibration_labels)
        for s in slots
        if s.calibration_error is not None and s.calibration_labels > 0
    ]
    total = sum(n for _, n in known)
    return sum(error * n for error, n in known) / total if total else None
