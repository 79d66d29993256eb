"""Feature values recorded at scoring time, kept until their label arrives."""

from __future__ import annotations

import array
import collections
from collections.abc import Sequence

from river import base

__all__ = ["PendingFeatures"]

DAY = 86400.0

FEATURE_TYPECODE = "f"
"""Features waiting for a label are kept as 32-bit floats: half the bytes of a double,
for a label that may come 45 days later, and seven significant digits (the model is
fitted on what a label brings, not on the tenth digit)."""


class PendingFeatures(base.Base):
    """Features of scored transactions, so that a late label teaches what the model saw.

    Values are stored compactly in the order of ``names``. Entries leave when they are
    older than ``horizon_days`` in event time or when more than ``max_entries`` wait.
    With ``presume_legit_days``, a transaction that has had no label for that long is
    handed out once as presumably legitimate (the usual reading of "no chargeback").

    Parameters
    ----------
    names
        Feature names, in storage order.
    horizon_days
        How long features wait for a label.
    max_entries
        Most entries kept; the oldest go first.
    presume_legit_days
        Age after which an unlabelled transaction counts as legitimate; 0 disables.

    Examples
    --------
    >>> store = PendingFeatures(("a", "b"), presume_legit_days=1)
    >>> store.record("tx1", 0.0, {"a": 1.0, "b": 2.0})
    >>> store.get("tx1")
    {'a': 1.0, 'b': 2.0}
    >>> store.expire(2 * 86400.0)
    [('tx1', {'a': 1.0, 'b': 2.0})]
    >>> store.expire(3 * 86400.0)
    []

    """

    def __init__(
        self,
        names: Sequence[str],
        horizon_days: float = 45.0,
        max_entries: int = 100_000,
        presume_legit_days: float = 0.0,
    ) -> None:
        self.names = tuple(names)
        self.horizon_days = horizon_days
        self.max_entries = max_entries
        self.presume_legit_days = presume_legit_days
        # transaction id -> (event time, values, labelled or presumed yet); oldest first
        self._entries: collections.OrderedDict[str, tuple[float, array.array, bool]] = (
            collections.OrderedDict()
        )
        # transactions not yet presumed legitimate, oldest first
        self._awaiting: collections.deque[tuple[float, str]] = collections.deque()

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, transaction_id: str, ts: float, features: dict[str, float]) -> None:
        get = features.get
        values = array.array(FEATURE_TYPECODE, [get(name, 0.0) for name in self.names])
        self._entries[transaction_id] = (ts, values, False)
        if self.presume_legit_days > 0:
            self._awaiting.append((ts, transaction_id))

    def get(self, transaction_id: str) -> dict[str, float] | None:
        entry = self._entries.get(transaction_id)
        return dict(zip(self.names, entry[1], strict=True)) if entry else None

    def mark_labelled(self, transaction_id: str) -> None:
        entry = self._entries.get(transaction_id)
        if entry is not None:
            self._entries[transaction_id] = (entry[0], entry[1], True)

    def expire(self, now: float) -> list[tuple[str, dict[str, float]]]:
        """Drop what is too old; return the transactions now presumed legitimate."""
        horizon = now - self.horizon_days * DAY
        presume = now - self.presume_legit_days * DAY if self.presume_legit_days > 0 else None
        while self._entries:
            tx, (ts, _values, _done) = next(iter(self._entries.items()))
            if ts >= horizon and len(self._entries) <= self.max_entries:
                break
            del self._entries[tx]
        presumed: list[tuple[str, dict[str, float]]] = []
        if presume is None:
            return presumed
        while self._awaiting and self._awaiting[0][0] <= presume:
            _, tx = self._awaiting.popleft()
            entry = self._entries.get(tx)
            if entry is not None and not entry[2]:
                self._entries[tx] = (entry[0], entry[1], True)
                presumed.append((tx, dict(zip(self.names, entry[1], strict=True))))
        return presumed
