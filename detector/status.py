"""The models' status: each shard's summary of its models, merged into one status per
model, with quality figures over the labelled transactions.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from detector.contracts import ModelQuality, ModelStatus, PolicyStatus
from detector.decision import CapacityThresholds, Thresholds, VolumeThresholds
from detector.policy import merge_policy
from detector.scoring import ModelState
from models import LabelledOutcome, QualityTracker
from models.ranking import average_precision, roc_auc


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


def summarize(state: ModelState, shard: int = 0) -> ShardSummary:
    """A shard's models as counters and quality windows (small, and picklable)."""
    slots = []
    for slot in state.models.values():
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
    )


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
    figures are over the shards' windows together; the thresholds and shares are the
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
            )
        )
    return out


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
