"""From a score to allow, review or block."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from river import stats

from detector.contracts import DecisionKind


def decide(score: float, review: float, block: float) -> DecisionKind:
    """Block at or above ``block``, review at or above ``review``, else allow.

    A threshold of 1.0 means never: a score of 1.0 is not blocked under a block threshold
    of 1.0 (so blocking can be switched off), nor reviewed under a review threshold of 1.0.
    """
    if block < 1.0 and score >= block:
        return "block"
    if review < 1.0 and score >= review:
        return "review"
    return "allow"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Scores at or above ``review`` are reviewed, at or above ``block`` blocked."""

    review: float = 0.6
    block: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.block <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= review <= block <= 1, got "
                f"review={self.review}, block={self.block}"
            )

    def decide(self, score: float) -> DecisionKind:
        return decide(score, self.review, self.block)

    def update(self, score: float) -> None:
        """Fixed thresholds learn nothing."""

    def decide_transaction(self, score: float, *, at: float, anomaly: float) -> DecisionKind:
        """The decision on one transaction (fixed thresholds need only its score)."""
        return self.decide(score)


class VolumeThresholds:
    """Thresholds that follow a target share of traffic, by streaming quantiles of scores.

    With ``review_share=0.01`` about 1% of transactions are reviewed or blocked, whatever
    the scale of the scores, so the alert volume matches the analysts' capacity as the
    models change. The quantiles are over the last ``window`` scores: the score
    distribution moves as the models learn, and thresholds must follow it. Until
    ``warmup`` scores have been seen, the ``fallback`` fixed thresholds decide. A score of
    0 is never alerted.

    The window's scores are also kept in order, so that :meth:`set_shares` can move to new
    shares at once, over the same scores, instead of starting over (River's rolling
    quantiles cannot change their quantile in place).

    Examples
    --------
    >>> t = VolumeThresholds(review_share=0.1, block_share=0.01, warmup=100, window=500)
    >>> for i in range(1000):
    ...     t.update((i % 100) / 100)
    >>> round(t.review, 2), round(t.block, 2)
    (0.89, 0.98)
    >>> t.decide(0.5), t.decide(0.95), t.decide(0.995)
    ('allow', 'review', 'block')
    >>> t.set_shares(review_share=0.2, block_share=0.05)
    >>> round(t.review, 2), round(t.block, 2)
    (0.79, 0.94)

    """

    # Maps the window's scores to the scale decisions are made on (the model's calibration
    # of raw scores to fraud probabilities): the window keeps raw scores, so that its
    # quantiles rank transactions alike whatever the calibration was when they came, and
    # its thresholds follow the calibration in force. None: the scores as they are.
    scale: Callable[[float], float] | None = None

    def __init__(
        self,
        review_share: float = 0.01,
        block_share: float = 0.001,
        warmup: int = 1000,
        fallback: Thresholds | None = None,
        window: int = 20_000,
    ) -> None:
        _check_shares(review_share, block_share)
        self.review_share = review_share
        self.block_share = block_share
        self.warmup = warmup
        self.fallback = fallback or Thresholds()
        self.window = window
        self._review_q = stats.RollingQuantile(1.0 - review_share, window)
        self._block_q = stats.RollingQuantile(1.0 - block_share, window)
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._seen = 0

    def set_shares(self, review_share: float, block_share: float) -> None:
        """Follow new shares from now on, over the scores already in the window."""
        _check_shares(review_share, block_share)
        review_q = stats.RollingQuantile(1.0 - review_share, self.window)
        block_q = stats.RollingQuantile(1.0 - block_share, self.window)
        for score in self._recent:
            review_q.update(score)
            block_q.update(score)
        self.review_share, self.block_share = review_share, block_share
        self._review_q, self._block_q = review_q, block_q

    @property
    def review(self) -> float:
        if self._seen < self.warmup:
            return self.fallback.review
        return max(self._scaled(float(self._review_q.get() or 0.0)), 1e-9)

    @property
    def block(self) -> float:
        if self._seen < self.warmup:
            return self.fallback.block
        return max(self._scaled(float(self._block_q.get() or 0.0)), self.review)

    def _scaled(self, score: float) -> float:
        return self.scale(score) if self.scale is not None else score

    def decide(self, score: float) -> DecisionKind:
        return decide(score, self.review, self.block)

    def decide_transaction(self, score: float, *, at: float, anomaly: float) -> DecisionKind:
        """The decision on one transaction (volume thresholds need only its score)."""
        return self.decide(score)

    def top_scores(self, *shares: float) -> list[float | None]:
        """The scores the top ``shares`` of the window's scores reach, one partial sort for all
        (None while empty)."""
        n = len(self._recent)
        if not n:
            return [None for _ in shares]
        ranks = [min(n - 1, int((1.0 - share) * n)) for share in shares]
        # A partial sort around the ranks: the window is recomputed every few hundred
        # transactions, and a full sort of its 20,000 scores costs milliseconds.
        ordered = np.partition(np.fromiter(self._recent, dtype=float, count=n), ranks)
        return [self._scaled(float(ordered[rank])) for rank in ranks]

    @property
    def seen(self) -> int:
        """Scores seen since the start (also beyond the window)."""
        return self._seen

    def update(self, score: float) -> None:
        self._review_q.update(score)
        self._block_q.update(score)
        self._recent.append(score)
        self._seen += 1


def _check_shares(review_share: float, block_share: float) -> None:
    if not 0.0 < block_share <= review_share < 1.0:
        raise ValueError(
            f"shares must satisfy 0 < block_share <= review_share < 1, got "
            f"review_share={review_share}, block_share={block_share}"
        )


# Capacity mode's bounds on the share of traffic alerted: however quiet the traffic, no
# more than MAX_REVIEW_SHARE of it is alerted (the rest of the capacity stays unused),
# and however busy, the threshold stays a quantile the window can resolve.
MAX_REVIEW_SHARE = 0.015
MIN_REVIEW_SHARE = 0.0001
# An anomaly score at or above this always passes the pacing guard: a glaring anomaly
# is reviewed even when the hour's alerts are spent.
GLARING_ANOMALY = 0.99
# Below this many scores the window's quantiles mean nothing (every new maximum would be
# alerted): the fallback review threshold applies, and an anomaly score of YOUNG_ANOMALY
# or more is reviewed, so that a new system is not blind to what stands out.
MIN_WINDOW_SCORES = 100
YOUNG_ANOMALY = 0.9
HOUR = 3600.0
MINUTE = 60.0
# The traffic estimate extrapolates at most from this much event time (a young estimate).
MIN_TRAFFIC_SPAN = 5 * MINUTE
# The pacing guard always lets this many alerts an hour through (if the capacity allows
# them), however young or quiet the traffic: the first anomalies of a new deployment.
MIN_ALERTS_PER_HOUR = 3
# In capacity mode at most this share of the alerts is blocked: the top scores among them.
BLOCK_SHARE_OF_ALERTS = 0.1
# The quantile threshold is recomputed after this many transactions, or when the share
# moves by more than a tenth.
RECOMPUTE_EVERY = 200


class CapacityThresholds:
    """Thresholds that aim at ``per_hour`` alerts an hour, whatever the traffic.

    The review share is the capacity over the transactions of the last hour (counted in
    per-minute buckets of event time, extrapolated while younger than an hour), clamped
    to [MIN_REVIEW_SHARE, MAX_REVIEW_SHARE]; the review threshold is that top share of the
    model's window of recent scores (``window``, the same object the slot keeps in every
    mode), from its first MIN_WINDOW_SCORES scores on (recomputed at every transaction
    while the window has fewer than ``warmup``); before them the ``fallback`` review
    threshold, and an anomaly score of YOUNG_ANOMALY or more is reviewed.

    A pacing guard then holds back alerts beyond the capacity: at most ``per_hour`` in
    any hour of event time, at most a quarter of an hour's worth at once (a token bucket
    refilled at the capacity), and at most MAX_REVIEW_SHARE of the hour's transactions
    (but MIN_ALERTS_PER_HOUR always), so that a cold start, whose traffic estimate and
    scores are young, cannot flood the queue. An anomaly score of GLARING_ANOMALY or more
    passes the guard. An alert is blocked when its score reaches ``block`` (1.0: never)
    and is among the top BLOCK_SHARE_OF_ALERTS of the alerts' scores.

    With several model shards each sees ``1 / shards`` of the traffic and keeps
    ``per_hour / shards`` of the capacity, so that together they keep the capacity.
    Event time is the clock (the latest transaction time seen): decisions do not depend
    on when a transaction is processed, a replay decides as the live run did, and a
    backlog gets its own hours' alerts.

    Examples
    --------
    >>> window = VolumeThresholds(warmup=100)
    >>> t = CapacityThresholds(window, per_hour=60, block=0.99, warmup=100)
    >>> decisions = []
    >>> for i in range(36_000):  # ten an event-second for an hour
    ...     score = (i * 7919 % 1000) / 1000
    ...     decisions.append(t.decide_transaction(score, at=i / 10, anomaly=0.5))
    ...     window.update(score)
    >>> alerts = len(decisions) - decisions.count("allow")
    >>> 50 <= alerts <= 60, t.alerts_last_hour == alerts
    (True, True)

    """

    # The running count of the last hour's transactions; None in thresholds pickled
    # before it was kept (recounted from the minutes once).
    _in_hour: int | None = None

    def __init__(
        self,
        window: VolumeThresholds,
        per_hour: float = 60.0,
        *,
        block: float = 0.9,
        shards: int = 1,
        fallback: Thresholds | None = None,
        warmup: int = 1000,
    ) -> None:
        _check_capacity(per_hour, block, shards)
        self.window = window
        self.per_hour = per_hour
        self.block_threshold = block
        self.shards = shards
        self.fallback = fallback or Thresholds()
        self.warmup = warmup
        self._clock: float | None = None  # the latest event time seen
        self._first: float | None = None
        self._minutes: collections.deque[list[int]] = collections.deque()  # [minute, count]
        self._in_hour = 0  # the sum of the minutes' counts
        self._alerts: collections.deque[float] = collections.deque()  # event times
        self._tokens = self.burst
        self._review: float | None = None  # the quantile threshold, once computed
        self._block_top: float | None = None  # the score of the top tenth of the alerts
        self._share = MAX_REVIEW_SHARE
        self._since_recompute = 0

    @property
    def budget(self) -> float:
        """This shard's alerts an hour."""
        return self.per_hour / self.shards

    @property
    def burst(self) -> float:
        """Most alerts the guard lets through at once: a quarter of an hour's worth."""
        return max(1.0, self.budget / 4)

    def set_capacity(self, per_hour: float, block: float) -> None:
        """A new capacity, keeping the traffic and the alerts of the last hour."""
        _check_capacity(per_hour, block, self.shards)
        self.per_hour, self.block_threshold = per_hour, block
        self._tokens = min(self._tokens, self.burst)
        self._since_recompute = RECOMPUTE_EVERY  # recompute at the next transaction

    def set_shards(self, shards: int) -> None:
        _check_capacity(self.per_hour, self.block_threshold, shards)
        self.shards = shards
        self._tokens = min(self._tokens, self.burst)

    @property
    def transactions_per_hour(self) -> float:
        """This shard's traffic over the last hour of event time (extrapolated while young)."""
        if self._clock is None or self._first is None:
            return 0.0
        seen = self._hour_count()
        span = min(HOUR, max(MIN_TRAFFIC_SPAN, self._clock - self._first))
        return seen * HOUR / span

    @property
    def review_share(self) -> float:
        """The share of traffic the capacity allows, clamped."""
        traffic = self.transactions_per_hour
        share = self.budget / traffic if traffic > 0 else MAX_REVIEW_SHARE
        return min(MAX_REVIEW_SHARE, max(MIN_REVIEW_SHARE, share))

    @property
    def review(self) -> float:
        # From the first scores on: the pacing guard, not a fixed threshold, keeps a young
        # window from flooding the queue, and a new system is not blind to what stands out.
        if self._review is None or self.window.seen < MIN_WINDOW_SCORES:
            return self.fallback.review
        return self._review

    @property
    def block(self) -> float:
        if self.window.seen < self.warmup or self._block_top is None:
            top = self.fallback.block
        else:
            top = self._block_top
        return max(self.block_threshold, self.review, top)

    @property
    def alerts_last_hour(self) -> int:
        return len(self._alerts)

    @property
    def holding(self) -> bool:
        """True while the pacing guard holds alerts back (but glaring anomalies)."""
        return not self._may_alert()

    def decide(self, score: float) -> DecisionKind:
        """What the thresholds alone say (no pacing, nothing recorded)."""
        return decide(score, self.review, self.block)

    def update(self, score: float) -> None:
        """The scores are the window's, which the model slot updates."""

    def decide_transaction(self, score: float, *, at: float, anomaly: float) -> DecisionKind:
        """The decision on a transaction at event time ``at``, recorded in the pacing."""
        self._observe(at)
        now = self._clock
        assert now is not None
        review = self.review
        young = self.window.seen < MIN_WINDOW_SCORES and anomaly >= YOUNG_ANOMALY
        if review >= 1.0 or (score < review and not young):
            return "allow"
        if not self._may_alert() and anomaly < GLARING_ANOMALY:
            return "allow"
        self._alerts.append(now)
        self._tokens = max(0.0, self._tokens - 1.0)
        block = self.block
        if block < 1.0 and score >= block:
            return "block"
        return "review"

    def _hour_count(self) -> int:
        """Transactions in the minutes of the last hour (kept as a running sum)."""
        in_hour = self._in_hour
        if in_hour is None:  # thresholds pickled before the running sum was kept
            in_hour = self._in_hour = sum(count for _, count in self._minutes)
        return in_hour

    def _may_alert(self) -> bool:
        seen = self._hour_count()
        allowed = min(self.budget, max(MIN_ALERTS_PER_HOUR, MAX_REVIEW_SHARE * seen))
        return len(self._alerts) < allowed and self._tokens >= 1.0

    def _observe(self, at: float) -> None:
        previous = self._clock
        now = at if previous is None else max(previous, at)
        if self._first is None:
            self._first = now
        elapsed = 0.0 if previous is None else now - previous
        self._clock = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.budget / HOUR)
        minute = int(now // MINUTE)
        in_hour = self._hour_count() + 1
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += 1
        else:
            self._minutes.append([minute, 1])
        while self._minutes and self._minutes[0][0] <= minute - 60:
            in_hour -= self._minutes.popleft()[1]
        self._in_hour = in_hour
        while self._alerts and self._alerts[0] <= now - HOUR:
            self._alerts.popleft()
        self._since_recompute += 1
        share = self.review_share
        if (
            self._review is None
            or self._since_recompute >= RECOMPUTE_EVERY
            or self.window.seen < self.warmup  # a young window moves fast (and is small)
            or abs(share - self._share) > self._share / 10
        ):
            self._recompute(share)

    def _recompute(self, share: float) -> None:
        top, block_top = self.window.top_scores(share, share * BLOCK_SHARE_OF_ALERTS)
        self._share = share
        self._since_recompute = 0
        # A score of 0 is never alerted.
        self._review = max(top, 1e-9) if top is not None else None
        self._block_top = block_top


def _check_capacity(per_hour: float, block: float, shards: int) -> None:
    if not (per_hour > 0 and per_hour < float("inf")):
        raise ValueError(f"the review capacity must be a positive number, got {per_hour}")
    if not 0.0 <= block <= 1.0:
        raise ValueError(f"the block threshold must be in [0, 1], got {block}")
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")


ThresholdsInForce = Thresholds | VolumeThresholds | CapacityThresholds
