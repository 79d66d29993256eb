"""The hybrid scorer: an unsupervised detector from the first event, a classifier from labels."""

from __future__ import annotations

import bisect
import math
import typing

from river import anomaly, base, compose, forest, linear_model, optim, preprocessing, tree

__all__ = ["DETECTOR_FEATURES", "HybridScore", "HybridScorer", "TailCalibration"]

# What makes a transaction unusual for its card without any label: the detector sees
# these, squashed so that one huge amount does not flatten every other value.
DETECTOR_FEATURES: tuple[str, ...] = (
    "log_amount",
    "card_amount_ratio",
    "card_tx_1h",
    "card_tx_24h",
    "card_new_terminal",
    "card_hours_since_last",
)


class HybridScore(typing.NamedTuple):
    """A score and the parts it was made of."""

    score: float
    anomaly: float
    raw_anomaly: float
    fraud_probability: float | None
    classifier_weight: float


class TailCalibration(base.Base):
    """Turns raw anomaly scores into ``[0, 1]`` by their rank among recent scores.

    The ``tail`` share of most unusual transactions maps onto ``(0, 1]``; everything
    below the ``1 - tail`` quantile maps to 0. A streaming histogram keeps it cheap and
    adaptive (counts are halved every ``half_life`` updates).

    Parameters
    ----------
    tail
        Share of traffic that may receive a non-zero anomaly score.
    bins
        Histogram resolution over raw scores in ``[0, 1]``.
    half_life
        Updates after which old scores weigh half.

    Examples
    --------
    >>> cal = TailCalibration(tail=0.1, bins=100)
    >>> for i in range(1000):
    ...     cal.update((i % 100) / 100)
    >>> cal.transform(0.5), round(cal.transform(0.995), 2)
    (0.0, 0.95)

    The top bin holds 1% of the scores; ties count half below, half above, so a score in
    it ranks at 99.5%, that is 95% of the way through the top 10%.

    """

    def __init__(self, tail: float = 0.02, bins: int = 400, half_life: int = 50_000) -> None:
        self.tail = tail
        self.bins = bins
        self.half_life = half_life
        self._counts = [0.0] * bins
        self._cumulative = [0.0] * bins
        self._total = 0.0
        self._since_refresh = 0
        self._since_decay = 0

    def _bin(self, raw: float) -> int:
        return min(self.bins - 1, max(0, int(raw * self.bins)))

    def update(self, raw: float) -> None:
        self._counts[self._bin(raw)] += 1.0
        self._total += 1.0
        self._since_refresh += 1
        self._since_decay += 1
        if self._since_decay >= self.half_life:
            self._counts = [c / 2 for c in self._counts]
            self._total /= 2
            self._since_decay = 0
            self._since_refresh = 1 << 30
        # Refresh the cumulative counts often while young, then every 100 updates.
        if self._since_refresh >= min(100, 1 + int(self._total) // 10):
            running = 0.0
            for i, c in enumerate(self._counts):
                running += c
                self._cumulative[i] = running
            self._since_refresh = 0

    def transform(self, raw: float) -> float:
        if self._total <= 0:
            return 0.0
        i = self._bin(raw)
        below = self._cumulative[i - 1] if i > 0 else 0.0
        # Ties inside the bin count as half below, half above.
        within = self._cumulative[i] - below
        rank = (below + within / 2) / max(self._cumulative[-1], 1e-12)
        return min(1.0, max(0.0, (rank - (1.0 - self.tail)) / self.tail))


# Fixed ranges of the detector's (log-compressed) features: unlike a running min-max
# scaler, they do not shift with the order events arrive in, and a value beyond
# anything seen so far still lands in the emptiest, most anomalous leaves.
DETECTOR_LIMITS: dict[typing.Hashable, tuple[float, float]] = {
    "log_amount": (0.0, 8.0),
    "card_amount_ratio": (0.0, 3.0),
    "card_tx_1h": (0.0, 2.5),
    "card_tx_24h": (0.0, 3.5),
    "card_new_terminal": (0.0, 0.7),
    "card_hours_since_last": (0.0, 6.6),
}


def _default_detector() -> base.Estimator:
    return anomaly.HalfSpaceTrees(
        n_trees=10, height=8, window_size=250, limits=DETECTOR_LIMITS, seed=42
    )


# Amount bands (log-spaced) let a linear model learn a step in risk at some amount,
# which a single weight on the amount cannot.
AMOUNT_BANDS: tuple[float, ...] = (10, 20, 40, 80, 120, 160, 200, 250, 320, 500, 1000, 2500)


_BAND_NAMES = tuple(f"amount_band_{lower:g}" for lower in (0.0, *AMOUNT_BANDS))


def amount_bands(x: dict[str, float]) -> dict[str, float]:
    """``x`` plus one indicator per amount band (a new dict: inputs are never mutated)."""
    band = bisect.bisect_right(AMOUNT_BANDS, x.get("amount", 0.0))
    out = dict(x)
    out.update(dict.fromkeys(_BAND_NAMES, 0.0))
    out[_BAND_NAMES[band]] = 1.0
    return out


def _logistic_regression() -> base.Estimator:
    return compose.Pipeline(
        compose.FuncTransformer(amount_bands),
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.1)),
    )


def _hoeffding_tree() -> base.Estimator:
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, leaf_prediction="nba", seed=42)


def _forest() -> base.Estimator:
    return forest.ARFClassifier(n_models=5, seed=42)


# The supervised models a deployment can choose from, by name.
CLASSIFIERS: dict[str, typing.Callable[[], base.Estimator]] = {
    "logreg": _logistic_regression,
    "tree": _hoeffding_tree,
    "forest": _forest,
}
_default_classifier = _logistic_regression


class HybridScorer(base.Estimator):
    """Anomaly detection from the first event, supervised learning as labels arrive.

    The score is ``w * p + (1 - w) * a``: ``a`` the detector's calibrated anomaly score,
    ``p`` the classifier's fraud probability, and ``w = n / (n + warmup_frauds)`` with
    ``n`` the number of labels learned of the scarcer class (usually frauds). A new
    deployment thus scores by anomaly alone and hands over to the classifier as
    confirmed frauds (and legitimate transactions) accumulate.

    Parameters
    ----------
    detector
        Unsupervised River anomaly detector (default: min-max scaling and half-space
        trees).
    classifier
        Supervised River binary classifier (default: standard scaling and logistic
        regression).
    warmup_frauds
        Fraud labels at which classifier and detector weigh the same.
    fraud_weight
        Sample weight of a fraud label, to offset how rare frauds are.
    anomaly_tail
        Share of traffic the detector alone can give a non-zero score.
    protect_detector
        Keep the detector from learning transactions it scores as anomalous (as River's
        ``QuantileFilter`` does) so it does not get used to the frauds it should flag.

    Examples
    --------
    Ordinary transactions, of varied amounts, are scored and learned without labels:

    >>> model = HybridScorer(warmup_frauds=5)
    >>> normal = [
    ...     {"log_amount": 3.0 + (i % 11) / 20, "card_amount_ratio": 0.7 + (i % 13) / 20}
    ...     for i in range(600)
    ... ]
    >>> for x in normal:
    ...     model.learn_unlabelled(x)
    >>> odd = {"log_amount": 7.0, "card_amount_ratio": 40.0}
    >>> model.predict_parts(odd).classifier_weight  # no fraud label yet: detector alone
    0.0

    Then a few confirmed frauds and legitimate transactions hand part of the score to
    the classifier, which learns what frauds look like:

    >>> for i in range(5):
    ...     model.learn_one({"log_amount": 6.0 + i / 2, "card_amount_ratio": 10.0 * (i + 1)}, True)
    >>> for x in normal[:50]:
    ...     model.learn_one(x, False)
    >>> model.labels_learned
    {'fraud': 5, 'legit': 50}
    >>> model.classifier_weight()
    0.5
    >>> model.predict_parts(odd).fraud_probability > 0.9
    True
    >>> model.score_one(odd) > max(model.score_one(x) for x in normal)
    True

    """

    def __init__(
        self,
        detector: base.Estimator | None = None,
        classifier: base.Estimator | None = None,
        warmup_frauds: int = 50,
        fraud_weight: float = 1.0,
        anomaly_tail: float = 0.02,
        protect_detector: bool = True,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.warmup_frauds = warmup_frauds
        self.fraud_weight = fraud_weight
        self.anomaly_tail = anomaly_tail
        self.protect_detector = protect_detector
        # River's type hints do not follow pipelines through: the detector scores and
        # learns without a target, the classifier takes ``w`` for its last step.
        self._detector: typing.Any = (
            detector.clone() if detector is not None else _default_detector()
        )
        self._classifier: typing.Any = (
            classifier.clone() if classifier is not None else _default_classifier()
        )
        self._calibration = TailCalibration(tail=anomaly_tail)
        self._labels = {"fraud": 0, "legit": 0}
        self.n_scored_unlabelled = 0

    @property
    def _supervised(self) -> bool:
        return True

    @property
    def labels_learned(self) -> dict[str, int]:
        return dict(self._labels)

    @staticmethod
    def _detector_view(x: dict[str, float]) -> dict[str, float]:
        view = {}
        for name in DETECTOR_FEATURES:
            if name in x:
                value = x[name]
                # Ratios and counts are heavy-tailed: compress them before min-max scaling.
                view[name] = math.log1p(max(value, 0.0)) if name != "log_amount" else value
        return view

    def classifier_weight(self) -> float:
        # A classifier that has seen one class only knows nothing: it weighs nothing until
        # both have arrived, then grows with the scarcer of the two (usually frauds).
        n = min(self._labels["fraud"], self._labels["legit"])
        return n / (n + self.warmup_frauds) if n else 0.0

    def predict_parts(self, x: dict[str, float]) -> HybridScore:
        """Score ``x`` and say how: anomaly, fraud probability and the classifier's weight."""
        raw = self._detector.score_one(self._detector_view(x))
        a = self._calibration.transform(raw)
        w = self.classifier_weight()
        if w == 0.0:
            return HybridScore(a, a, raw, None, 0.0)
        p = self._classifier.predict_proba_one(x).get(True, 0.0)
        return HybridScore(w * p + (1.0 - w) * a, a, raw, p, w)

    def score_one(self, x: dict[str, float]) -> float:
        return self.predict_parts(x).score

    def learn_unlabelled(self, x: dict[str, float], score: HybridScore | None = None) -> None:
        """Let the detector learn a transaction just scored (unless it looked anomalous)."""
        view = self._detector_view(x)
        raw = score.raw_anomaly if score is not None else self._detector.score_one(view)
        # A detector still filling its first window (half-space trees) scores everything
        # 0: calibrating those placeholders would rank its first real scores as outliers.
        if raw > 0.0 or self._calibration._total > 0:
            self._calibration.update(raw)
        anomalous = self._calibration.transform(raw) > 0.5
        # An empty view has nothing to learn (and half-space trees cannot be built on it).
        if view and not (self.protect_detector and anomalous):
            self._detector.learn_one(view)
        self.n_scored_unlabelled += 1

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn the truth about a transaction from the features it had when scored."""
        self._classifier.learn_one(x, bool(y), w=self.fraud_weight if y else 1.0)
        self._labels["fraud" if y else "legit"] += 1
