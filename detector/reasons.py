"""Reasons an analyst understands, ranked strongest first.

Every figure in a reason reads true: a share is never rounded to 100% (or 0%) unless it
is exactly that (``percent``), counts take their plural only when more than one
(``counted``), and the classifier's fraud probability ranks by the weight the classifier
has in the score, which the reason states.
"""

from __future__ import annotations

from detector.decision import (
    MIN_WINDOW_SCORES,
    CapacityThresholds,
    Thresholds,
    ThresholdsInForce,
    VolumeThresholds,
)
from models import HybridScore
from models.card_features import LARGE_RATIO

MAX_REASONS = 5


def percent(share: float, digits: int = 1) -> str:
    """``share`` as a percentage that never reads 100% or 0% unless it is exactly that.

    >>> percent(0.87), percent(0.99996), percent(1.0), percent(0.00002), percent(0.0)
    ('87.0%', '99.9%', '100.0%', 'under 0.1%', '0.0%')
    """
    text = f"{share:.{digits}%}"
    if 0.0 < share < 1.0:
        step = 10.0**-digits / 100  # the smallest share shown: 0.1% at one digit
        if float(text[:-1]) >= 100.0:
            return f"{1.0 - step:.{digits}%}"
        if float(text[:-1]) <= 0.0:
            return f"under {step:.{digits}%}"
    return text


def counted(n: float, thing: str, things: str | None = None) -> str:
    """``n`` of ``thing``, plural unless exactly one.

    >>> counted(1, "confirmed fraud"), counted(2.0, "confirmed fraud")
    ('1 confirmed fraud', '2 confirmed frauds')
    >>> counted(0, "entry", "entries")
    '0 entries'
    """
    plural = things if things is not None else f"{thing}s"
    return f"{n:.0f} {thing if n == 1 else plural}"


def explain(
    features: dict[str, float],
    parts: HybridScore,
    *,
    terminal_id: str,
    history_days: float,
    frauds_learned: int,
) -> list[str]:
    """Turn the feature values and score parts of one transaction into ranked reasons.

    The anomaly detector's reasons rank by its share of the score (``1 - w``), the
    classifier's by its own (``w``): a classifier weighing little never comes first.
    """
    ranked: list[tuple[float, str]] = []
    w = parts.classifier_weight
    detector_share = 1.0 - w
    history = features.get("card_history_tx", 0.0)
    ratio = features.get("card_amount_ratio", 1.0)
    if history >= 1 and ratio >= 3.0:
        ranked.append(
            (
                ratio / 3.0,
                f"amount {ratio:.1f}x this card's {history_days:.0f}-day average "
                f"({features.get('card_mean_amount', 0.0):.2f})",
            )
        )
    large_7d = features.get("card_large_7d", 0.0)
    if history >= 1 and large_7d >= 1:
        # the card's own recent payments far above its habits: it may be compromised
        ranked.append(
            (
                0.5 + large_7d / 4,
                f"{counted(large_7d, 'payment')} of this card in 7 days at "
                f"{LARGE_RATIO:g}x its {history_days:.0f}-day average or more (largest "
                f"{features.get('card_max_ratio_7d', 0.0):.1f}x)",
            )
        )
    if history >= 1 and features.get("card_new_terminal", 0.0) >= 1.0:
        ranked.append(
            (0.9, f"first use of terminal {terminal_id} by this card in {history_days:.0f} days")
        )
    if 0.5 <= parts.anomaly < 0.9 and (history == 0 or ratio < 3.0):
        # An amount rarer than most made the score, but neither the card's average nor
        # the strong anomaly reason below says so: say it plainly.
        ranked.append(
            (
                parts.anomaly * detector_share,
                f"amount {features.get('amount', 0.0):.2f} rarer than {percent(parts.anomaly)} "
                f"of past transactions",
            )
        )
    if history == 0:
        # A card's first transaction is no reason to alert by itself (every card of a new
        # deployment has one): it only says why the card's habits are unknown, after what
        # made the score.
        ranked.append((0.1, "first transaction seen for this card"))
    frauds_7d = features.get("terminal_frauds_7d", 0.0)
    frauds_28d = features.get("terminal_frauds_28d", 0.0)
    if frauds_7d >= 1:
        ranked.append(
            (1.0 + frauds_7d, f"terminal had {counted(frauds_7d, 'confirmed fraud')} in 7 days")
        )
    elif frauds_28d >= 1:
        ranked.append(
            (
                0.5 + frauds_28d / 4,
                f"terminal had {counted(frauds_28d, 'confirmed fraud')} in 28 days",
            )
        )
    tx_1h = features.get("card_tx_1h", 0.0)
    if tx_1h >= 2:
        ranked.append((tx_1h / 2, f"{tx_1h + 1:.0f} transactions on this card within an hour"))
    usual_per_day = history / history_days if history_days else 0.0
    tx_24h = features.get("card_tx_24h", 0.0)
    if tx_24h >= 4 and tx_24h >= 3 * usual_per_day:
        ranked.append(
            (
                tx_24h / max(3 * usual_per_day, 4.0),
                f"{tx_24h + 1:.0f} transactions in 24 hours (usual {usual_per_day:.1f} a day)",
            )
        )
    if parts.fraud_probability is not None and parts.fraud_probability >= 0.5:
        ranked.append(
            (
                # its part of the score, on the scale of the detector's reasons
                w * parts.fraud_probability,
                f"fraud probability {parts.fraud_probability:.2f} from a classifier weighing "
                f"{percent(w, 0)} of the score, trained on "
                f"{counted(frauds_learned, 'confirmed fraud')}",
            )
        )
    if parts.anomaly >= 0.9:
        ranked.append(
            (
                parts.anomaly * detector_share,
                f"amount rarer than {percent(parts.anomaly)} of past transactions, overall "
                f"and for this card"
                if history
                else f"amount {features.get('amount', 0.0):.2f} rarer than "
                f"{percent(parts.anomaly)} of past transactions",
            )
        )
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [text for _, text in ranked[:MAX_REASONS]]


def decision_reason(decision: str, parts: HybridScore, thresholds: ThresholdsInForce) -> str:
    """Why the thresholds alerted a transaction that no feature explains: the score and
    the threshold it reached, or the young window's anomaly rule."""
    if decision == "block":
        return f"score {parts.score:.2f} at or above the block threshold {thresholds.block:.2f}"
    review = thresholds.review
    if parts.score >= review:
        return (
            f"score {parts.score:.2f} at or above the review threshold {review:.2f}"
            f"{_threshold_kind(thresholds)}"
        )
    return (
        f"anomaly score {parts.anomaly:.2f} on a model that has seen fewer than "
        f"{MIN_WINDOW_SCORES} scores: reviewed while its thresholds settle"
    )


def _threshold_kind(thresholds: ThresholdsInForce) -> str:
    if isinstance(thresholds, Thresholds):
        return ""
    if isinstance(thresholds, CapacityThresholds):
        return " (capacity mode)"
    assert isinstance(thresholds, VolumeThresholds)
    return f" (top {percent(thresholds.review_share, 2)} of recent scores)"
