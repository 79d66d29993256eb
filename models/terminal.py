"""What happened at a terminal: volume and the frauds confirmed there so far."""

from __future__ import annotations

import collections

from river import base

__all__ = ["TERMINAL_FEATURES", "TerminalProfile"]

DAY = 86400.0
BUCKET = 3600.0

TERMINAL_FEATURES: tuple[str, ...] = (
    "terminal_tx_24h",
    "terminal_tx_7d",
    "terminal_frauds_7d",
    "terminal_frauds_28d",
    "terminal_fraud_share_28d",
)


class TerminalProfile(base.Base):
    """Hourly transaction counts and labelled frauds of one terminal.

    Volume is kept in hourly buckets, so a busy terminal costs no more memory than a
    quiet one. Labels count by the time of the transaction they are about, and only
    from the moment they arrive: the features never look into the future.

    Parameters
    ----------
    history_days
        How far back, in event time, volume and labels are kept.

    Examples
    --------
    >>> t = TerminalProfile()
    >>> for i in range(4):
    ...     t.observe(i * 3600.0)
    >>> t.record_label("tx-1", 3600.0, is_fraud=True)
    >>> x = t.features(5 * 3600.0)
    >>> x["terminal_tx_24h"], x["terminal_frauds_7d"], x["terminal_fraud_share_28d"]
    (4.0, 1.0, 0.25)

    """

    def __init__(self, history_days: float = 28.0) -> None:
        self.history_days = history_days
        # hour bucket (epoch seconds // 3600) -> transactions in it, oldest first
        self._volume: collections.OrderedDict[int, int] = collections.OrderedDict()
        # transaction id -> transaction time of its confirmed fraud; a verdict changed to
        # legit removes it. Legit labels need no memory: only frauds are counted.
        self._frauds: dict[str, float] = {}

    def features(self, ts: float) -> dict[str, float]:
        """Features of a transaction at ``ts`` from what the terminal saw before it."""
        now_bucket = int(ts // BUCKET)
        tx_24h = tx_7d = tx_all = 0
        for bucket, count in reversed(self._volume.items()):
            age = now_bucket - bucket
            if age < 0:
                continue
            tx_all += count
            if age < 7 * 24:
                tx_7d += count
                if age < 24:
                    tx_24h += count
        frauds_7d = frauds_28d = 0
        for when in self._frauds.values():
            if when <= ts:
                since = ts - when
                if since <= 28 * DAY:
                    frauds_28d += 1
                    if since <= 7 * DAY:
                        frauds_7d += 1
        return {
            "terminal_tx_24h": float(tx_24h),
            "terminal_tx_7d": float(tx_7d),
            "terminal_frauds_7d": float(frauds_7d),
            "terminal_frauds_28d": float(frauds_28d),
            "terminal_fraud_share_28d": frauds_28d / tx_all if tx_all else 0.0,
        }

    def observe(self, ts: float) -> None:
        """Count a transaction and forget buckets and labels older than the window."""
        bucket = int(ts // BUCKET)
        self._volume[bucket] = self._volume.get(bucket, 0) + 1
        oldest = int((ts - self.history_days * DAY) // BUCKET)
        while self._volume:
            first = next(iter(self._volume))
            if first >= oldest:
                break
            del self._volume[first]
        if self._frauds:
            horizon = ts - self.history_days * DAY
            for tx in [tx for tx, when in self._frauds.items() if when < horizon]:
                del self._frauds[tx]

    def record_label(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        """Remember the verdict on one of this terminal's transactions."""
        if is_fraud:
            self._frauds[transaction_id] = ts
        else:
            self._frauds.pop(transaction_id, None)

    @property
    def frauds_held(self) -> int:
        return len(self._frauds)
