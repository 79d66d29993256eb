"""Online quality of a model: its decision-time scores against the labels that arrive later.

A label can come weeks after its transaction was scored, and by then the model has
learned and its thresholds have moved. To judge the model fairly, what it said *at
decision time* (its score, and whether that score was alerted) is kept until the label
arrives; the labelled transactions then enter a window of the most recent ones, from
which ROC AUC, average precision and alert precision and recall are computed.

Pure Python, no I/O: the figures themselves are computed by the caller from
:meth:`QualityTracker.window`, at status time only, so that scoring stays cheap.
"""

from __future__ import annotations

import collections
import typing
from typing import Protocol

__all__ = ["LabelledOutcome", "PendingScores", "QualityTracker", "RecalledScore", "ScoreBook"]

DAY = 86400.0


class LabelledOutcome(typing.NamedTuple):
    """One labelled transaction: what the model said at decision time, and the truth."""

    score: float
    alerted: bool
    is_fraud: bool


class RecalledScore(typing.NamedTuple):
    """The decision-time score of a labelled transaction, for the calibration to learn."""

    score: float
    # the verdict this label replaces (None: the transaction's first label)
    previous: bool | None


class ScoreBook(Protocol):
    """Where decision-time scores wait for their labels: in memory (``PendingScores``),
    or, in the detector, on local disk (``detector.waiting.StoredScores``)."""

    def put(self, transaction_id: str, ts: float, score: float, alerted: bool) -> None:
        """Keep what the model said about a transaction (again after a replay)."""

    def take(self, transaction_id: str) -> tuple[float, bool] | None:
        """The kept score and alert of a transaction, if it is still kept."""

    def __len__(self) -> int:
        """Scores kept."""


class PendingScores:
    """Decision-time scores in memory, oldest first, until the label horizon.

    A score is handed out once (``take`` forgets it). At most ``max_pending`` are kept:
    the oldest go first.
    """

    # Expiry scans the oldest scores only every so many records: cheap on the hot path.
    EXPIRE_EVERY = 1024

    def __init__(self, horizon_days: float = 45.0, max_pending: int = 2_000_000) -> None:
        self.horizon = horizon_days * DAY
        self.max_pending = max_pending
        # transaction id -> (event time, score, alerted); oldest first
        self._pending: collections.OrderedDict[str, tuple[float, float, bool]] = (
            collections.OrderedDict()
        )
        self._until_expiry = self.EXPIRE_EVERY

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, transaction_id: str, ts: float, score: float, alerted: bool) -> None:
        self._pending[transaction_id] = (ts, score, alerted)
        self._until_expiry -= 1
        if self._until_expiry <= 0:
            self._until_expiry = self.EXPIRE_EVERY
            self._expire()

    def take(self, transaction_id: str) -> tuple[float, bool] | None:
        entry = self._pending.pop(transaction_id, None)
        return None if entry is None else (entry[1], entry[2])

    def _expire(self) -> None:
        pending = self._pending
        if not pending:
            return
        # Scores arrive about in event-time order: the newest entry tells the time.
        horizon = next(reversed(pending.values()))[0] - self.horizon
        while pending:
            tx_id, (ts, _score, _alerted) = next(iter(pending.items()))
            if ts >= horizon and len(pending) <= self.max_pending:
                break
            del pending[tx_id]


class QualityTracker:
    """Decision-time scores awaiting their labels, and the window of the last labelled.

    Parameters
    ----------
    window
        Labelled transactions kept for the quality figures (the most recent).
    horizon_days
        How long, in event time, a score waits for its label (the label horizon).
    max_pending
        Most scores waiting for a label in memory; the oldest go first.
    scores
        Where the scores wait (default: in memory, ``PendingScores``).

    A transaction counts once in the window: a second label (a verdict changed, a
    chargeback after a presumed-legitimate label) updates its truth in place.

    Examples
    --------
    >>> q = QualityTracker(window=2)
    >>> q.record("a", 0.0, 0.9, True)
    >>> q.record("b", 1.0, 0.2, False)
    >>> q.record("c", 2.0, 0.4, False)
    >>> q.learn("a", True), q.learn("b", False), q.learn("zzz", True)
    (RecalledScore(score=0.9, previous=None), RecalledScore(score=0.2, previous=None), None)
    >>> q.learn("c", True)  # the window keeps the last two labelled
    RecalledScore(score=0.4, previous=None)
    >>> [tuple(o) for o in q.window()]
    [(0.2, False, False), (0.4, False, True)]
    >>> q.learn("b", True)  # a new verdict on "b": still counted once
    RecalledScore(score=0.2, previous=False)
    >>> [o.is_fraud for o in q.window()], len(q.window())
    ([True, True], 2)

    """

    EXPIRE_EVERY = PendingScores.EXPIRE_EVERY

    def __init__(
        self,
        window: int = 5000,
        horizon_days: float = 45.0,
        max_pending: int = 2_000_000,
        scores: ScoreBook | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.size = window
        self._pending: ScoreBook = (
            scores if scores is not None else PendingScores(horizon_days, max_pending)
        )
        # transaction id -> (score, alerted, is fraud); the order labels first arrived in
        self._window: collections.OrderedDict[str, tuple[float, bool, bool]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._window)

    @property
    def pending(self) -> int:
        """Scores waiting for a label."""
        return len(self._pending)

    def record(self, transaction_id: str, ts: float, score: float, alerted: bool) -> None:
        """Remember what the model said about a transaction it just scored."""
        self._pending.put(transaction_id, ts, score, alerted)

    def learn(self, transaction_id: str, is_fraud: bool) -> RecalledScore | None:
        """Count a label; its decision-time score, or None when the transaction's score
        is no longer (or never was) kept."""
        entry = self._pending.take(transaction_id)
        window = self._window
        if entry is not None:
            window[transaction_id] = (entry[0], entry[1], is_fraud)
            if len(window) > self.size:
                window.popitem(last=False)
            return RecalledScore(entry[0], None)
        known = window.get(transaction_id)
        if known is None:
            return None
        # Assigning to an existing key keeps its place: the transaction counts once.
        window[transaction_id] = (known[0], known[1], is_fraud)
        return RecalledScore(known[0], known[2])

    def resize(self, window: int) -> None:
        """Keep ``window`` labelled transactions from now on (the most recent stay)."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.size = window
        while len(self._window) > window:
            self._window.popitem(last=False)

    def window(self) -> list[LabelledOutcome]:
        """The labelled transactions in the window, oldest label first."""
        return [LabelledOutcome(*outcome) for outcome in self._window.values()]
