"""Reasons an analyst understands, ranked strongest first."""

from __future__ import annotations

from models import HybridScore

MAX_REASONS = 5


def explain(
    features: dict[str, float],
    parts: HybridScore,
    *,
    terminal_id: str,
    history_days: float,
    frauds_learned: int,
) -> list[str]:
    """Turn the feature values and score parts of one transaction into ranked reasons."""
    ranked: list[tuple[float, str]] = []
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
    if history >= 1 and features.get("card_new_terminal", 0.0) >= 1.0:
        ranked.append(
            (0.9, f"first use of terminal {terminal_id} by this card in {history_days:.0f} days")
        )
    if 0.5 <= parts.anomaly < 0.9 and (history == 0 or ratio < 3.0):
        # An amount rarer than most made the score, but neither the card's average nor
        # the strong anomaly reason below says so: say it plainly.
        ranked.append(
            (
                parts.anomaly,
                f"amount {features.get('amount', 0.0):.2f} rarer than {parts.anomaly:.1%} "
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
        ranked.append((1.0 + frauds_7d, f"terminal had {frauds_7d:.0f} confirmed frauds in 7 days"))
    elif frauds_28d >= 1:
        ranked.append(
            (0.5 + frauds_28d / 4, f"terminal had {frauds_28d:.0f} confirmed frauds in 28 days")
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
                2.0 * parts.fraud_probability,
                f"fraud probability {parts.fraud_probability:.2f} from a classifier trained "
                f"on {frauds_learned} confirmed frauds",
            )
        )
    if parts.anomaly >= 0.9:
        ranked.append(
            (
                parts.anomaly,
                f"amount rarer than {parts.anomaly:.1%} of past transactions, overall and "
                f"for this card"
                if history
                else f"amount {features.get('amount', 0.0):.2f} rarer than "
                f"{parts.anomaly:.1%} of past transactions",
            )
        )
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [text for _, text in ranked[:MAX_REASONS]]
