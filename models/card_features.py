"""The card's features: their names, the amounts they count, and how they are computed.

``models.card.CardProfile`` keeps a card's log and the counts and exact sums of its
windows as of a transaction (``Aggregates``); ``card_features`` turns them into that
transaction's features. Pure Python, no I/O.
"""

from __future__ import annotations

import math
import typing

__all__ = [
    "CARD_FEATURES",
    "MAX_AMOUNT",
    "MIN_AMOUNT",
    "SCALE_BITS",
    "Aggregates",
    "bounded_amount",
    "card_features",
    "scaled_amount",
]

HOUR = 3600.0
# Amounts enter the sums and ratios clamped to this range: a subnormal amount (5e-324 is
# a valid positive number) would make the next ratio infinite, and a huge one would
# overflow the sums of squares. A cent and a trillion bound every real card payment.
MIN_AMOUNT = 0.01
MAX_AMOUNT = 1e12
# Every double from MIN_AMOUNT up is a whole multiple of the unit in the last place of
# MIN_AMOUNT, 2**-59, so amounts times 2**SCALE_BITS are integers and their sums (and
# sums of squares) are kept exactly, as Python integers: a window that lets go of a
# trillion keeps no rounding residue of it, and a feature depends only on which
# transactions are in its window, not on the order they came and went in.
SCALE_BITS = 53 - math.frexp(MIN_AMOUNT)[1]


def bounded_amount(amount: float) -> float:
    """``amount`` clamped to [MIN_AMOUNT, MAX_AMOUNT] (NaN counts as the minimum).

    >>> bounded_amount(5e-324), bounded_amount(12.5), bounded_amount(1e308)
    (0.01, 12.5, 1000000000000.0)

    """
    if not amount >= MIN_AMOUNT:  # also true for NaN
        return MIN_AMOUNT
    return min(amount, MAX_AMOUNT)


def scaled_amount(amount: float) -> int:
    """A bounded amount as the exact integer ``amount * 2**SCALE_BITS``."""
    return int(math.ldexp(amount, SCALE_BITS))


CARD_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "card_tx_1h",
    "card_tx_24h",
    "card_tx_7d",
    "card_amount_24h",
    "card_history_tx",
    "card_mean_amount",
    "card_amount_ratio",
    "card_hours_since_last",
    "card_new_terminal",
    "card_amount_zscore",
    "card_amount_ratio_7d",
    "card_frauds_14d",
    "card_max_ratio_7d",
    "card_large_7d",
)

# An amount this many times the card's average is far above its habits: the card's
# transactions of the last 7 days that were count in ``card_large_7d``.
LARGE_RATIO = 2.5


class Aggregates(typing.NamedTuple):
    """Counts and exact sums (scaled by 2**SCALE_BITS) of the windows as of one time."""

    hour: int
    day: int
    day_sum: int
    week: int
    week_sum: int
    history: int
    history_sum: int
    history_squares: int
    same_terminal: bool
    last: float | None
    # the week window's amounts (bounded): its largest, and how many are at least
    # ``LARGE_RATIO`` times the history's mean
    week_max: float = 0.0
    week_large: int = 0


def card_features(ts: float, amount: float, agg: Aggregates, frauds_14d: int) -> dict[str, float]:
    """Features of a transaction of ``amount`` (bounded) at ``ts``, from the card's windows
    as of ``ts`` and its frauds confirmed in the last 14 days."""
    n = agg.history
    if n:
        mean = agg.history_sum / (n << SCALE_BITS)
        # Spread of the card's amounts, floored so that a card with identical amounts
        # does not turn a one-cent difference into a huge z-score.
        variance = (n * agg.history_squares - agg.history_sum**2) / (n * n << 2 * SCALE_BITS)
        std = max(math.sqrt(variance), 0.1 * mean)
    else:
        mean, std = amount, 0.0
    week_mean = agg.week_sum / (agg.week << SCALE_BITS) if agg.week else 0.0
    return {
        "amount": amount,
        "log_amount": math.log1p(amount),
        "card_tx_1h": float(agg.hour),
        "card_tx_24h": float(agg.day),
        "card_tx_7d": float(agg.week),
        "card_amount_24h": agg.day_sum / (1 << SCALE_BITS),
        "card_history_tx": float(n),
        "card_mean_amount": mean,
        "card_amount_ratio": amount / mean if mean > 0 else 1.0,
        "card_hours_since_last": (
            min((ts - agg.last) / HOUR, 24.0 * 30) if agg.last is not None else 24.0 * 30
        ),
        "card_new_terminal": (0.0 if agg.same_terminal else 1.0) if n else 0.0,
        "card_amount_zscore": max(-20.0, min(20.0, (amount - mean) / std)) if std else 0.0,
        "card_amount_ratio_7d": amount / week_mean if agg.week else 1.0,
        "card_frauds_14d": float(frauds_14d),
        # Memory of anomalies: a card that paid far above its habits in the last days is
        # likely compromised for days (its next frauds are as large).
        "card_max_ratio_7d": agg.week_max / mean if agg.week and n else 1.0,
        "card_large_7d": float(agg.week_large),
    }
