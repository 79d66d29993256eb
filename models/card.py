"""What a card did before: the per-card feature state."""

from __future__ import annotations

import collections
import math
import typing

from river import base

from models.frauds import ConfirmedFrauds

__all__ = ["CARD_FEATURES", "MAX_AMOUNT", "MIN_AMOUNT", "CardProfile", "bounded_amount"]

HOUR = 3600.0
DAY = 86400.0
# Amounts enter the sums and ratios clamped to this range: a subnormal amount (5e-324 is
# a valid positive number) would make the next ratio infinite, and a huge one would
# overflow the sums of squares. A cent and a trillion bound every real card payment.
MIN_AMOUNT = 0.01
MAX_AMOUNT = 1e12


def bounded_amount(amount: float) -> float:
    """``amount`` clamped to [MIN_AMOUNT, MAX_AMOUNT] (NaN counts as the minimum).

    >>> bounded_amount(5e-324), bounded_amount(12.5), bounded_amount(1e308)
    (0.01, 12.5, 1000000000000.0)

    """
    if not amount >= MIN_AMOUNT:  # also true for NaN
        return MIN_AMOUNT
    return min(amount, MAX_AMOUNT)


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
        # Running aggregates over sliding windows, so a feature costs the same for a
        # card with one transaction a month as for one with hundreds.
        self._history = _Window(history_days * DAY, keep_terminals=True)
        self._week = _Window(7 * DAY)
        self._day = _Window(DAY)
        self._hour = _Window(HOUR)
        self._frauds = ConfirmedFrauds(history_days)

    def __len__(self) -> int:
        return self._history.count

    @property
    def last_seen(self) -> float | None:
        return self._history.events[-1][0] if self._history.events else None

    def _aggregates(self, ts: float, terminal_id: str) -> _Aggregates:
        """The windows' aggregates as seen from ``ts``, without changing them."""
        last = self.last_seen
        if last is not None and ts < last:
            return self._scan(ts, terminal_id)  # a late transaction: the rare, slow path
        history = self._history.as_of(ts, terminal_id)
        return _Aggregates(
            hour=self._hour.as_of(ts).count,
            day=self._day.as_of(ts),
            week=self._week.as_of(ts),
            history=history,
            last=last if history.count else None,
        )

    def _scan(self, ts: float, terminal_id: str) -> _Aggregates:
        """Aggregates from the raw history, ignoring what came after ``ts``."""
        windows = {
            "history": _Sums(),
            "week": _Sums(),
            "day": _Sums(),
            "hour": _Sums(),
        }
        spans = {"history": self.history_days * DAY, "week": 7 * DAY, "day": DAY, "hour": HOUR}
        last = None
        for when, amt, terminal in self._history.events:
            if when > ts:
                continue
            for name, sums in windows.items():
                if ts - when <= spans[name]:
                    sums.add(amt, terminal == terminal_id)
            last = when if last is None or when > last else last
        return _Aggregates(
            hour=windows["hour"].count,
            day=windows["day"],
            week=windows["week"],
            history=windows["history"],
            last=last,
        )

    def features(self, ts: float, amount: float, terminal_id: str) -> dict[str, float]:
        """Features of a transaction at ``ts``, from the history before it (not updated)."""
        amount = bounded_amount(amount)
        agg = self._aggregates(ts, terminal_id)
        history, week, day = agg.history, agg.week, agg.day
        n = history.count
        mean = history.total / n if n else amount
        # Spread of the card's amounts, floored so that a card with identical amounts
        # does not turn a one-cent difference into a huge z-score.
        variance = history.squares / n - mean * mean if n else 0.0
        std = max(math.sqrt(max(variance, 0.0)), 0.1 * mean) if n else 0.0
        return {
            "amount": amount,
            "log_amount": math.log1p(amount),
            "card_tx_1h": float(agg.hour),
            "card_tx_24h": float(day.count),
            "card_tx_7d": float(week.count),
            "card_amount_24h": max(day.total, 0.0),
            "card_history_tx": float(n),
            "card_mean_amount": mean,
            "card_amount_ratio": amount / mean if mean > 0 else 1.0,
            "card_hours_since_last": (
                min((ts - agg.last) / HOUR, 24.0 * 30) if agg.last is not None else 24.0 * 30
            ),
            "card_new_terminal": (0.0 if history.same_terminal else 1.0) if n else 0.0,
            "card_amount_zscore": max(-20.0, min(20.0, (amount - mean) / std)) if std else 0.0,
            "card_amount_ratio_7d": amount / (week.total / week.count) if week.count else 1.0,
            "card_frauds_14d": float(self._frauds.count(ts, days=14)),
        }

    def observe(self, ts: float, amount: float, terminal_id: str) -> None:
        """Remember a transaction and forget what fell out of the windows."""
        amount = bounded_amount(amount)
        for window in (self._history, self._week, self._day, self._hour):
            window.forget_before(ts)
        for window in (self._history, self._week, self._day, self._hour):
            window.add(ts, amount, terminal_id)
        while self._history.count > self.max_events:
            self._history.drop_oldest()
        self._frauds.forget_before(ts)

    def record_label(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        """Remember the verdict on one of this card's transactions."""
        self._frauds.record(transaction_id, ts, is_fraud=is_fraud)


class _Sums:
    """Count, sum and sum of squares of some amounts; whether a given terminal is among them."""

    __slots__ = ("count", "same_terminal", "squares", "total")

    def __init__(
        self, count: int = 0, total: float = 0.0, squares: float = 0.0, same: bool = False
    ) -> None:
        self.count = count
        self.total = total
        self.squares = squares
        self.same_terminal = same

    def add(self, amount: float, same_terminal: bool) -> None:
        self.count += 1
        self.total += amount
        self.squares += amount * amount
        self.same_terminal = self.same_terminal or same_terminal


class _Aggregates(typing.NamedTuple):
    hour: int
    day: _Sums
    week: _Sums
    history: _Sums
    last: float | None


class _Window:
    """Transactions of the last ``seconds`` with their count, sum and sum of squares."""

    __slots__ = ("count", "events", "keep_terminals", "seconds", "squares", "terminals", "total")

    def __init__(self, seconds: float, *, keep_terminals: bool = False) -> None:
        self.seconds = seconds
        self.keep_terminals = keep_terminals
        self.events: collections.deque[tuple[float, float, str]] = collections.deque()
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.terminals: dict[str, int] = {}

    def __getstate__(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def add(self, ts: float, amount: float, terminal_id: str) -> None:
        self.events.append((ts, amount, terminal_id))
        self.count += 1
        self.total += amount
        self.squares += amount * amount
        if self.keep_terminals:
            self.terminals[terminal_id] = self.terminals.get(terminal_id, 0) + 1

    def as_of(self, now: float, terminal_id: str | None = None) -> _Sums:
        """The sums at ``now``: without the transactions that have fallen out by then."""
        horizon = now - self.seconds
        count, total, squares = self.count, self.total, self.squares
        stale_here = 0
        for when, amount, terminal in self.events:
            if when >= horizon:
                break
            count -= 1
            total -= amount
            squares -= amount * amount
            stale_here += terminal == terminal_id
        if count == 0:
            total = squares = 0.0
        same = terminal_id is not None and self.terminals.get(terminal_id, 0) > stale_here
        return _Sums(count, total, squares, same)

    def forget_before(self, now: float) -> None:
        horizon = now - self.seconds
        while self.events and self.events[0][0] < horizon:
            self.drop_oldest()

    def drop_oldest(self) -> None:
        _, amount, terminal_id = self.events.popleft()
        self.count -= 1
        if self.count == 0:  # start afresh: no rounding residue survives an empty window
            self.total = self.squares = 0.0
        else:
            self.total -= amount
            self.squares -= amount * amount
        if self.keep_terminals:
            left = self.terminals[terminal_id] - 1
            if left:
                self.terminals[terminal_id] = left
            else:
                del self.terminals[terminal_id]
