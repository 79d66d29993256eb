"""What happened at a terminal: volume and the frauds confirmed there so far."""

from __future__ import annotations

import collections
import itertools
import typing
from array import array

from river import base

from models.frauds import ConfirmedFrauds

__all__ = ["TERMINAL_FEATURES", "TerminalProfile"]

DAY = 86400.0
BUCKET = 3600.0

TERMINAL_FEATURES: tuple[str, ...] = (
    "terminal_tx_24h",
    "terminal_tx_7d",
    "terminal_frauds_7d",
    "terminal_frauds_28d",
    "terminal_fraud_share_28d",
    "terminal_frauds_2d",
    "terminal_fraud_rate_7d",
    "terminal_fraud_rate_14d",
    "terminal_fraud_rate_28d",
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
        self._frauds = ConfirmedFrauds(history_days)
        # hour bucket of the transaction -> labels received about it (either verdict)
        self._labelled: dict[int, int] = {}

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
        frauds_2d, frauds_7d, frauds_14d, frauds_28d = self._frauds.counts(ts, (2, 7, 14, 28))
        labelled_7d = labelled_14d = labelled_28d = 0
        # Without a fraud in 28 days every rate is 0: no need to count verdicts.
        for bucket, count in self._labelled.items() if frauds_28d else ():
            age = now_bucket - bucket
            if 0 <= age < 28 * 24:
                labelled_28d += count
                if age < 14 * 24:
                    labelled_14d += count
                    if age < 7 * 24:
                        labelled_7d += count
        return {
            "terminal_tx_24h": float(tx_24h),
            "terminal_tx_7d": float(tx_7d),
            "terminal_frauds_7d": float(frauds_7d),
            "terminal_frauds_28d": float(frauds_28d),
            "terminal_fraud_share_28d": frauds_28d / tx_all if tx_all else 0.0,
            # Among the transactions whose verdict is known: how many were frauds.
            "terminal_frauds_2d": float(frauds_2d),
            "terminal_fraud_rate_7d": min(1.0, frauds_7d / labelled_7d) if labelled_7d else 0.0,
            "terminal_fraud_rate_14d": (
                min(1.0, frauds_14d / labelled_14d) if labelled_14d else 0.0
            ),
            "terminal_fraud_rate_28d": (
                min(1.0, frauds_28d / labelled_28d) if labelled_28d else 0.0
            ),
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
        for bucket in [b for b in self._labelled if b < oldest]:
            del self._labelled[bucket]
        self._frauds.forget_before(ts)

    def record_label(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        """Remember the verdict on one of this terminal's transactions."""
        self._frauds.record(transaction_id, ts, is_fraud=is_fraud)
        bucket = int(ts // BUCKET)
        self._labelled[bucket] = self._labelled.get(bucket, 0) + 1

    @property
    def last_seen(self) -> float | None:
        """Start of the latest hour with a transaction (event time), if any is kept."""
        return max(self._volume) * BUCKET if self._volume else None

    @property
    def frauds_held(self) -> int:
        return len(self._frauds)

    # --- pickling --------------------------------------------------------------------

    def __getstate__(self) -> tuple[object, ...]:
        # The hourly counts as two arrays of small integers instead of a dict of Python
        # ints, since every snapshot of a terminal pickles them: counts, and the hours as
        # gaps from one to the next (they are in time order unless events came late,
        # then as hours after the oldest).
        hours = list(self._volume)
        first = hours[0] if hours else 0
        ordered = all(a < b for a, b in itertools.pairwise(hours))
        steps = [b - a for a, b in itertools.pairwise([first, *hours])] if ordered else []
        return (
            self.history_days,
            first,
            _packed(steps) if ordered else None,
            None if ordered else _packed([h - min(hours) for h in hours]),
            _packed(list(self._volume.values())),
            self._labelled,
            self._frauds.held(),
        )

    def __setstate__(self, state: tuple[typing.Any, ...]) -> None:
        self.history_days, first, steps, offsets, counts, self._labelled, frauds = state
        if steps is not None:
            hours = list(itertools.accumulate(_unpacked(steps), initial=first))[1:]
        else:
            raw = _unpacked(offsets)
            base = first - raw[0]
            hours = [base + h for h in raw]
        self._volume = collections.OrderedDict(zip(hours, _unpacked(counts), strict=True))
        self._frauds = ConfirmedFrauds(self.history_days)
        for transaction_id, when in frauds.items():
            self._frauds.record(transaction_id, when, is_fraud=True)


def _packed(values: list[int]) -> bytes:
    """Non-negative integers as 1-, 2- or 4-byte machine integers, the fewest that hold
    the largest, after a byte that says which."""
    top = max(values, default=0)
    code = "B" if top < 2**8 else "H" if top < 2**16 else "I"
    return code.encode() + array(code, values).tobytes()


def _unpacked(data: bytes) -> array[int]:
    values = array(chr(data[0]))
    values.frombytes(data[1:])
    return values
