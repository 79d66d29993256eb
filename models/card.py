"""What a card did before: the per-card feature state."""

from __future__ import annotations

import collections
import math

from river import base

from models.frauds import ConfirmedFrauds

__all__ = ["CARD_FEATURES", "CardProfile"]

HOUR = 3600.0
DAY = 86400.0

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
)


class CardProfile(base.Base):
    """Sliding-window history of one card, turned into features for its next transaction.

    Parameters
    ----------
    history_days
        How far back, in event time, transactions are remembered.
    max_events
        Most transactions remembered; the oldest are forgotten first.

    Examples
    --------
    >>> card = CardProfile()
    >>> for day in range(10):
    ...     card.observe(day * 86400.0, 20.0, "t1")
    >>> x = card.features(10 * 86400.0, 200.0, "t9")
    >>> x["card_amount_ratio"], x["card_new_terminal"], x["card_tx_7d"]
    (10.0, 1.0, 7.0)

    Windows include their boundary: the transaction of day 3 is exactly 7 days old and
    counts in ``card_tx_7d`` (days 3 to 9).

    """

    def __init__(self, history_days: float = 30.0, max_events: int = 1000) -> None:
        self.history_days = history_days
        self.max_events = max_events
        # (event time in epoch seconds, amount, terminal id), oldest first.
        self._events: collections.deque[tuple[float, float, str]] = collections.deque()
        self._frauds = ConfirmedFrauds(history_days)

    def __len__(self) -> int:
        return len(self._events)

    @property
    def last_seen(self) -> float | None:
        return self._events[-1][0] if self._events else None

    def features(self, ts: float, amount: float, terminal_id: str) -> dict[str, float]:
        """Features of a transaction at ``ts``, from the history before it (not updated)."""
        horizon = ts - self.history_days * DAY
        tx_1h = tx_24h = tx_7d = n = 0
        amount_24h = amount_7d = total = squares = 0.0
        new_terminal = 1.0
        last = None
        for when, amt, terminal in reversed(self._events):
            if when > ts:  # a late, out-of-order transaction: ignore what came after it
                continue
            if when < horizon:
                break
            if last is None:
                last = when
            age = ts - when
            n += 1
            total += amt
            squares += amt * amt
            if age <= 7 * DAY:
                tx_7d += 1
                amount_7d += amt
                if age <= DAY:
                    tx_24h += 1
                    amount_24h += amt
                    if age <= HOUR:
                        tx_1h += 1
            if terminal == terminal_id:
                new_terminal = 0.0
        mean = total / n if n else amount
        # Spread of the card's amounts, floored so that a card with identical amounts
        # does not turn a one-cent difference into a huge z-score.
        std = max(math.sqrt(max(squares / n - mean * mean, 0.0)), 0.1 * mean) if n else 0.0
        return {
            "amount": amount,
            "log_amount": math.log1p(amount),
            "card_tx_1h": float(tx_1h),
            "card_tx_24h": float(tx_24h),
            "card_tx_7d": float(tx_7d),
            "card_amount_24h": amount_24h,
            "card_history_tx": float(n),
            "card_mean_amount": mean,
            "card_amount_ratio": amount / mean if mean > 0 else 1.0,
            "card_hours_since_last": (
                min((ts - last) / HOUR, 24.0 * 30) if last is not None else 24.0 * 30
            ),
            "card_new_terminal": new_terminal if n else 0.0,
            "card_amount_zscore": max(-20.0, min(20.0, (amount - mean) / std)) if std else 0.0,
            "card_amount_ratio_7d": amount / (amount_7d / tx_7d) if tx_7d else 1.0,
            "card_frauds_14d": float(self._frauds.count(ts, days=14)),
        }

    def observe(self, ts: float, amount: float, terminal_id: str) -> None:
        """Remember a transaction and forget what fell out of the window."""
        self._events.append((ts, amount, terminal_id))
        horizon = ts - self.history_days * DAY
        while self._events and (
            self._events[0][0] < horizon or len(self._events) > self.max_events
        ):
            self._events.popleft()
        self._frauds.forget_before(ts)

    def record_label(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        """Remember the verdict on one of this card's transactions."""
        self._frauds.record(transaction_id, ts, is_fraud=is_fraud)
