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
import sys
import typing
from collections.abc import Sequence
from typing import Any, Protocol

from models.ranking import average_precision, roc_auc

__all__ = [
    "LabelledOutcome",
    "PendingScores",
    "QualityFigures",
    "QualityMinimum",
    "QualityPoint",
    "QualityTracker",
    "RecalledScore",
    "ScoreBook",
    "TrafficEstimate",
    "figures_of",
    "traffic_estimate",
]

DAY = 86400.0


class LabelledOutcome(typing.NamedTuple):
    """One labelled transaction: what the model said at decision time, and the truth."""

    score: float
    alerted: bool
    is_fraud: bool
    # where the label came from (analyst, chargeback, presumed...); "" when not known
    source: str = ""
    # how the transaction came to be labelled (alerted, exploration, chargeback, reported);
    # "" for presumed labels and those kept before labels said it
    origin: str = ""


class QualityMinimum(typing.NamedTuple):
    """The fewest labels a quality figure is published over: below, it is ``None``.

    ROC AUC and average precision need both classes (``frauds`` and ``legit``), alert
    recall the frauds, alert precision the labelled alerts (``alerts``).
    """

    frauds: int = 30
    legit: int = 30
    alerts: int = 30
    # labels of the exploration sample, for the estimates over the whole traffic
    exploration: int = 100


class QualityFigures(typing.NamedTuple):
    """The quality figures over a window of labelled outcomes, and the counts behind them."""

    window: int
    frauds: int
    legit: int
    alerts: int  # labelled transactions that were alerted (review or block)
    caught: int  # frauds among them
    auc: float | None
    average_precision: float | None
    alert_precision: float | None
    alert_recall: float | None


class QualityPoint(typing.NamedTuple):
    """One point of a model's quality trend: the counts of its window at a time, and its
    ROC AUC (``None`` while the window lacks a class). Counts add up over shards."""

    at: float  # epoch seconds, wall clock
    window: int
    frauds: int
    alerts: int
    caught: int
    auc: float | None


def figures_of(
    window: Sequence[LabelledOutcome], minimum: QualityMinimum | None = None
) -> QualityFigures:
    """Quality figures over labelled outcomes: ``None`` where undefined, or over fewer
    labels than ``minimum`` asks (default: none asked).

    >>> w = [LabelledOutcome(0.9, True, True), LabelledOutcome(0.2, False, False)]
    >>> figures_of(w).auc, figures_of(w, QualityMinimum(30, 30, 30)).auc
    (1.0, None)
    """
    n = len(window)
    frauds = sum(o.is_fraud for o in window)
    alerts = sum(o.alerted for o in window)
    caught = sum(o.alerted and o.is_fraud for o in window)
    auc: float | None = None
    ap: float | None = None
    if 0 < frauds < n:
        truth = [o.is_fraud for o in window]
        scores = [min(1.0, max(0.0, o.score)) for o in window]
        auc = roc_auc(truth, scores)
        ap = average_precision(truth, scores)
    return figures_from_counts(n, frauds, alerts, caught, auc, ap, minimum)


def figures_from_counts(
    window: int,
    frauds: int,
    alerts: int,
    caught: int,
    auc: float | None,
    ap: float | None,
    minimum: QualityMinimum | None = None,
) -> QualityFigures:
    """The figures of these counts, each ``None`` below ``minimum``."""
    least = minimum or QualityMinimum(0, 0, 0)
    legit = window - frauds
    ranked = frauds >= max(1, least.frauds) and legit >= max(1, least.legit)
    return QualityFigures(
        window=window,
        frauds=frauds,
        legit=legit,
        alerts=alerts,
        caught=caught,
        auc=auc if ranked else None,
        average_precision=ap if ranked else None,
        alert_precision=caught / alerts if alerts and alerts >= least.alerts else None,
        alert_recall=caught / frauds if frauds and frauds >= least.frauds else None,
    )


class TrafficEstimate(typing.NamedTuple):
    """Figures over the whole traffic, from the labels of the exploration sample."""

    labels: int  # exploration labels in the window
    allowed_fraud_rate: float | None
    recall: float | None


def traffic_estimate(
    window: Sequence[LabelledOutcome],
    *,
    alerted_share: float | None,
    alert_precision: float | None,
    minimum: QualityMinimum | None = None,
) -> TrafficEstimate:
    """Fraud rate among the allowed transactions and recall over the whole traffic.

    The exploration labels are a random sample of the allowed transactions: each stands
    for ``1 / share`` of them, so the frauds among them estimate the frauds the model
    let through. With ``alerted_share`` of the traffic alerted at ``alert_precision``,
    the frauds per transaction are ``a * p`` alerted and ``(1 - a) * rate`` allowed;
    recall is the first over both. ``None`` below ``minimum.exploration`` labels (or
    without an alerted share and precision, for the recall).

    >>> w = [LabelledOutcome(0.1, False, i < 2, "analyst", "exploration") for i in range(100)]
    >>> e = traffic_estimate(w, alerted_share=0.01, alert_precision=0.5)
    >>> e.labels, e.allowed_fraud_rate, round(e.recall, 3)
    (100, 0.02, 0.202)
    """
    least = minimum or QualityMinimum(0, 0, 0, 0)
    explored = [o for o in window if o.origin == "exploration"]
    n = len(explored)
    if n < max(1, least.exploration):
        return TrafficEstimate(n, None, None)
    rate = sum(o.is_fraud for o in explored) / n
    recall = None
    if alerted_share is not None and alert_precision is not None:
        caught = alerted_share * alert_precision
        missed = (1.0 - alerted_share) * rate
        recall = caught / (caught + missed) if caught + missed > 0 else None
    return TrafficEstimate(n, rate, recall)


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
    minimum
        The fewest labels a figure is published over (default: ``QualityMinimum()``).
    trend_points
        Points of the quality trend kept (the most recent).

    A transaction counts once in the window: a second label (a verdict changed, a
    chargeback after a presumed-legitimate label) updates its truth in place, and
    ``relabelled`` counts the verdict it replaced, so that labels learned can be told
    net of changed verdicts.

    Examples
    --------
    >>> q = QualityTracker(window=2)
    >>> q.record("a", 0.0, 0.9, True)
    >>> q.record("b", 1.0, 0.2, False)
    >>> q.record("c", 2.0, 0.4, False)
    >>> q.learn("a", True, "analyst"), q.learn("b", False), q.learn("zzz", True)
    (RecalledScore(score=0.9, previous=None), RecalledScore(score=0.2, previous=None), None)
    >>> q.learn("c", True)  # the window keeps the last two labelled
    RecalledScore(score=0.4, previous=None)
    >>> [tuple(o) for o in q.window()]
    [(0.2, False, False, '', ''), (0.4, False, True, '', '')]
    >>> q.learn("b", True, "chargeback")  # a new verdict on "b": still counted once
    RecalledScore(score=0.2, previous=False)
    >>> [o.is_fraud for o in q.window()], len(q.window())
    ([True, True], 2)
    >>> q.relabelled
    {'fraud': 0, 'legit': 1}
    >>> q.mark(100.0), q.mark(160.0)  # a trend point when the window changed since
    (True, False)
    >>> q.trend()
    [QualityPoint(at=100.0, window=2, frauds=2, alerts=0, caught=0, auc=None)]

    """

    EXPIRE_EVERY = PendingScores.EXPIRE_EVERY
    TREND_POINTS = 48

    def __init__(
        self,
        window: int = 5000,
        horizon_days: float = 45.0,
        max_pending: int = 2_000_000,
        scores: ScoreBook | None = None,
        minimum: QualityMinimum | None = None,
        trend_points: int = TREND_POINTS,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.size = window
        self.minimum = minimum or QualityMinimum()
        self.trend_points = trend_points
        self._pending: ScoreBook = (
            scores if scores is not None else PendingScores(horizon_days, max_pending)
        )
        # transaction id -> (score, alerted, is fraud, source, origin); the order labels
        # first arrived in (a window pickled before origins holds 4-tuples)
        self._window: collections.OrderedDict[str, tuple[float, bool, bool, str, str]] = (
            collections.OrderedDict()
        )
        self._init_trend()

    def _init_trend(self) -> None:
        # verdicts replaced by a later label, by the class they had
        self._relabelled = {"fraud": 0, "legit": 0}
        self._trend: collections.deque[QualityPoint] = collections.deque(maxlen=self.trend_points)
        self._changes = 0  # labels into the window since the last trend point

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A tracker pickled before the trend and the minimum (snapshot format 5) gets
        # them empty and at their defaults.
        self.__dict__.update(state)
        if "_trend" not in state:
            self.minimum = QualityMinimum()
            self.trend_points = self.TREND_POINTS
            self._init_trend()
            self._changes = len(self._window)

    def __len__(self) -> int:
        return len(self._window)

    @property
    def pending(self) -> int:
        """Scores waiting for a label."""
        return len(self._pending)

    def record(self, transaction_id: str, ts: float, score: float, alerted: bool) -> None:
        """Remember what the model said about a transaction it just scored."""
        self._pending.put(transaction_id, ts, score, alerted)

    @property
    def relabelled(self) -> dict[str, int]:
        """Labels whose verdict a later label replaced, by the class they had."""
        return dict(self._relabelled)

    def learn(
        self, transaction_id: str, is_fraud: bool, source: str = "", origin: str = ""
    ) -> RecalledScore | None:
        """Count a label from ``source`` (of ``origin``, see ``Label.origin``); its
        decision-time score, or None when the transaction's score is no longer (or never
        was) kept."""
        entry = self._pending.take(transaction_id)
        window = self._window
        source = sys.intern(source)  # a handful of sources and origins, kept once each
        origin = sys.intern(origin)
        if entry is not None:
            window[transaction_id] = (entry[0], entry[1], is_fraud, source, origin)
            if len(window) > self.size:
                window.popitem(last=False)
            self._changes += 1
            return RecalledScore(entry[0], None)
        known = window.get(transaction_id)
        if known is None:
            return None
        # Assigning to an existing key keeps its place: the transaction counts once.
        window[transaction_id] = (known[0], known[1], is_fraud, source, origin)
        self._relabelled["fraud" if known[2] else "legit"] += 1
        self._changes += 1
        return RecalledScore(known[0], known[2])

    def mark(self, at: float) -> bool:
        """Add a point to the quality trend, at time ``at``, if labels entered the window
        since the last point (a status period without labels adds none); True if added."""
        if not self._changes:
            return False
        self._changes = 0
        figures = figures_of(self.window())
        self._trend.append(
            QualityPoint(
                at, figures.window, figures.frauds, figures.alerts, figures.caught, figures.auc
            )
        )
        return True

    def trend(self) -> list[QualityPoint]:
        """The quality trend, oldest point first."""
        return list(self._trend)

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
