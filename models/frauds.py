"""Confirmed frauds of one card or terminal, counted by the time of their transaction."""

from __future__ import annotations

from river import base

__all__ = ["ConfirmedFrauds"]

DAY = 86400.0


class ConfirmedFrauds(base.Base):
    """Frauds confirmed so far (by analysts or chargebacks), keyed by transaction.

    Labels count by the time of the transaction they are about and only once they have
    arrived, so a count never looks into the future. A verdict changed to legit removes
    the fraud; legit labels need no memory.

    Parameters
    ----------
    history_days
        Frauds older than this, in event time, are forgotten.

    Examples
    --------
    >>> frauds = ConfirmedFrauds()
    >>> frauds.record("tx-1", 0.0, is_fraud=True)
    >>> frauds.record("tx-2", 10 * 86400.0, is_fraud=True)
    >>> frauds.count(12 * 86400.0, days=7), frauds.count(12 * 86400.0, days=28)
    (1, 2)
    >>> frauds.record("tx-2", 10 * 86400.0, is_fraud=False)
    >>> frauds.count(12 * 86400.0, days=7)
    0

    """

    def __init__(self, history_days: float = 28.0) -> None:
        self.history_days = history_days
        self._frauds: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._frauds)

    def held(self) -> dict[str, float]:
        """The frauds held: transaction id -> time of the transaction (a copy)."""
        return dict(self._frauds)

    def record(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        if is_fraud:
            self._frauds[transaction_id] = ts
        else:
            self._frauds.pop(transaction_id, None)

    def count(self, now: float, *, days: float) -> int:
        """Frauds on transactions between ``now - days`` and ``now`` (inclusive)."""
        return self.counts(now, (days,))[0]

    def counts(self, now: float, windows: tuple[float, ...]) -> list[int]:
        """``count`` for several windows (in days) in one pass."""
        result = [0] * len(windows)
        if not self._frauds:  # the usual case: nothing to scan
            return result
        starts = [now - days * DAY for days in windows]
        for when in self._frauds.values():
            if when <= now:
                for i, start in enumerate(starts):
                    if when >= start:
                        result[i] += 1
        return result

    def forget_before(self, now: float) -> None:
        if self._frauds:
            horizon = now - self.history_days * DAY
            for tx in [tx for tx, when in self._frauds.items() if when < horizon]:
                del self._frauds[tx]
