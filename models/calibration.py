"""From a ranking score to the probability of fraud, learned online from labels."""

from __future__ import annotations

import math

from river import base

__all__ = ["ScoreCalibrator"]

# The bins cover the raw score's log-odds from -9 to 9 (raw scores of 0.0001 to 0.9999),
# half a unit each: fine where the frauds are, and beyond them the map follows the prior's
# slope. Fixed edges, so that the map does not depend on the order labels arrive in.
LOW, HIGH, WIDTH = -9.0, 9.0, 0.5
BINS = int((HIGH - LOW) / WIDTH)
CENTERS: tuple[float, ...] = tuple(LOW + WIDTH * (i + 0.5) for i in range(BINS))
# log-odds beyond these are the same (keeps exp() finite)
LOGIT_LIMIT = 40.0
# Weights grow by 2 ** (1 / half_life) per label instead of old counts shrinking; they are
# brought back to 1 before they get large.
RESCALE_ABOVE = 1e12
# Reliability bins of the predicted probability: [0, 0.1), ..., [0.9, 1].
RELIABILITY_BINS = 10


def _logit(p: float) -> float:
    if p <= 0.0:
        return -LOGIT_LIMIT
    if p >= 1.0:
        return LOGIT_LIMIT
    return max(-LOGIT_LIMIT, min(LOGIT_LIMIT, math.log(p / (1.0 - p))))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _isotonic(values: list[float], weights: list[float]) -> list[float]:
    """Pool adjacent violators: the non-decreasing sequence closest to ``values``."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([value, weight, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, w, n = blocks.pop()
            last = blocks[-1]
            last[0] = (last[0] * last[1] + mean * w) / (last[1] + w)
            last[1] += w
            last[2] += n
    out: list[float] = []
    for mean, _, n in blocks:
        out.extend([mean] * int(n))
    return out


class ScoreCalibrator(base.Estimator):
    """Maps a raw score in ``[0, 1]`` to the probability of fraud, strictly increasingly.

    Labels are counted in bins of the raw score's log-odds; each bin's fraud rate is a
    Beta posterior whose prior mean is the *prior map* below, worth ``prior_labels``
    labels; the rates are made non-decreasing by isotonic regression and interpolated in
    log-odds between bin centres. Old labels weigh half after ``half_life`` labels, so
    the map follows a model that keeps learning.

    Before any label, the prior map reads a raw score ``s`` as a likelihood ratio
    ``s / (1 - s)`` on the odds of the ``base_rate``: with a base rate of 1%, a raw score
    of 0.5 means 1%, 0.99 means 50% and 0.999 means 91%. For the anomaly detector, whose
    score ``s`` says "rarer than a share ``s`` of past transactions", that is the
    probability of fraud if every fraud were among the rarest transactions.

    The map is strictly increasing: a share ``1e-3`` of the prior map is always mixed in,
    so that transactions keep their order (what AUC, average precision and card
    precision measure) whatever the labels.

    Parameters
    ----------
    base_rate
        Fraud rate assumed before labels.
    half_life
        Labels after which a label weighs half.
    prior_labels
        Weight of the prior map in each bin, in labels.

    Examples
    --------
    Before labels, the prior map:

    >>> calibrator = ScoreCalibrator(base_rate=0.01)
    >>> [round(calibrator.predict_one(s), 3) for s in (0.5, 0.99, 0.999)]
    [0.01, 0.5, 0.91]

    Raw scores of 0.6 and above that turn out fraudulent one time in five:

    >>> import random
    >>> rng = random.Random(1)
    >>> for i in range(20_000):
    ...     s = rng.random()
    ...     calibrator.learn_one(s, rng.random() < (0.2 if s >= 0.6 else 0.01))
    >>> round(calibrator.predict_one(0.3), 3), round(calibrator.predict_one(0.8), 3)
    (0.013, 0.205)
    >>> calibrator.predict_one(0.8) < calibrator.predict_one(0.8000001)
    True
    >>> calibrator.labels_learned
    20000
    >>> round(calibrator.calibration_error(), 3)
    0.006

    """

    # Share of the prior map mixed in, which makes the map strictly increasing.
    PRIOR_SHARE = 1e-3

    def __init__(
        self, base_rate: float = 0.01, half_life: int = 50_000, prior_labels: float = 1.0
    ) -> None:
        if not 0.0 < base_rate < 1.0:
            raise ValueError(f"base_rate must be in (0, 1), got {base_rate}")
        if half_life < 1:
            raise ValueError(f"half_life must be at least 1, got {half_life}")
        if prior_labels <= 0:
            raise ValueError(f"prior_labels must be > 0, got {prior_labels}")
        self.base_rate = base_rate
        self.half_life = half_life
        self.prior_labels = prior_labels
        self._prior_logit = math.log(base_rate / (1.0 - base_rate))
        self._growth = 2.0 ** (1.0 / half_life)
        self._weight = 1.0  # the weight of the next label
        self._labels = [0.0] * BINS
        self._frauds = [0.0] * BINS
        # the map: log-odds of the fraud probability at each bin centre
        self._map = [c + self._prior_logit for c in CENTERS]
        # prequential reliability: per bin of predicted probability, the labels, the sum
        # of predictions and the frauds
        self._reliability = [[0.0, 0.0, 0.0] for _ in range(RELIABILITY_BINS)]
        self.labels_learned = 0
        self._stale = 0

    @staticmethod
    def _bin(z: float) -> int:
        return min(BINS - 1, max(0, int((z - LOW) / WIDTH)))

    def _prior(self, z: float) -> float:
        return _sigmoid(z + self._prior_logit)

    def predict_one(self, score: float) -> float:
        """The probability of fraud of a transaction with raw score ``score``.

        The ends stay: a raw score of 0 (nothing known against it) is 0, and 1 is 1."""
        if score <= 0.0 or score >= 1.0:
            return 0.0 if score <= 0.0 else 1.0
        z = _logit(score)
        position = (z - CENTERS[0]) / WIDTH
        fitted = self._map
        if position <= 0.0:
            logit = fitted[0] + (z - CENTERS[0])
        elif position >= BINS - 1:
            logit = fitted[-1] + (z - CENTERS[-1])
        else:
            i = int(position)
            logit = fitted[i] + (fitted[i + 1] - fitted[i]) * (position - i)
        share = self.PRIOR_SHARE
        return (1.0 - share) * _sigmoid(logit) + share * self._prior(z)

    def learn_one(self, score: float, is_fraud: bool) -> None:
        """Count the truth about a transaction scored ``score`` when it was decided."""
        self._observe(score, is_fraud)
        i = self._bin(_logit(score))
        self._labels[i] += self._weight
        if is_fraud:
            self._frauds[i] += self._weight
        self._count()

    def revise_one(self, score: float, is_fraud: bool) -> None:
        """A learned label turned out wrong (a chargeback after a legitimate verdict, or
        the reverse): the transaction counts once, with the new truth."""
        self._observe(score, is_fraud)
        i = self._bin(_logit(score))
        change = self._weight if is_fraud else -self._weight
        self._frauds[i] = min(self._labels[i], max(0.0, self._frauds[i] + change))
        self._count()

    def _observe(self, score: float, is_fraud: bool) -> None:
        # Judge the map on the label before it learns from it.
        p = self.predict_one(score)
        entry = self._reliability[min(RELIABILITY_BINS - 1, int(p * RELIABILITY_BINS))]
        entry[0] += self._weight
        entry[1] += self._weight * p
        if is_fraud:
            entry[2] += self._weight

    def _count(self) -> None:
        self.labels_learned += 1
        self._weight *= self._growth
        if self._weight > RESCALE_ABOVE:
            scale = 1.0 / self._weight
            self._labels = [n * scale for n in self._labels]
            self._frauds = [f * scale for f in self._frauds]
            self._reliability = [[v * scale for v in entry] for entry in self._reliability]
            self._weight = 1.0
        self._stale += 1
        # Refit often while young, then every 100 labels.
        if self._stale >= min(100, 1 + self.labels_learned // 10):
            self._refit()

    def _refit(self) -> None:
        # Counts in units of the newest label's weight: the prior is worth as much
        # against recent labels whatever their age.
        k = self.prior_labels
        scale = 1.0 / self._weight
        rates = []
        weights = []
        for c, n, f in zip(CENTERS, self._labels, self._frauds, strict=True):
            n, f = n * scale, f * scale
            rates.append((f + k * self._prior(c)) / (n + k))
            weights.append(n + k)
        self._map = [_logit(rate) for rate in _isotonic(rates, weights)]
        self._stale = 0

    def calibration_error(self) -> float | None:
        """Expected calibration error of the labels learned, each judged by the map before
        it learned that label (10 equal bins of probability; recent labels weigh more),
        or None before labels."""
        total = sum(entry[0] for entry in self._reliability)
        if total <= 0.0:
            return None
        return sum(abs(entry[1] - entry[2]) for entry in self._reliability) / total
