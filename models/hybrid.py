"""The hybrid scorer: an unsupervised detector from the first event, a classifier from labels."""

from __future__ import annotations

import bisect
import math
import typing

from river import base, compose, forest, linear_model, optim, preprocessing, tree

from models.surprise import TailSurprise

__all__ = ["CLASSIFIERS", "DETECTOR_FEATURES", "HybridScore", "HybridScorer"]

# What makes a transaction unusual without any label: a large amount, and an amount far
# above the card's own habits. (Replays of the Handbook's data showed velocity and new
# terminals to add nothing but noise to an unsupervised score.)
DETECTOR_FEATURES: tuple[str, ...] = ("log_amount", "card_amount_ratio")


class HybridScore(typing.NamedTuple):
    """A score and the parts it was made of."""

    score: float
    anomaly: float
    fraud_probability: float | None
    classifier_weight: float
    # the hybrid score before calibration, once ``score`` is calibrated
    raw_score: float | None = None


# Fixed ranges of the detector's (log-compressed) features: unlike running minima and
# maxima, they do not shift with the order events arrive in.
DETECTOR_LIMITS: dict[str, tuple[float, float]] = {
    "log_amount": (0.0, 8.0),
    "card_amount_ratio": (0.0, 3.0),
}


def _default_detector() -> base.Estimator:
    return TailSurprise(DETECTOR_LIMITS)


# Amount bands (log-spaced) let a linear model learn a step in risk at some amount,
# which a single weight on the amount cannot.
AMOUNT_BANDS: tuple[float, ...] = (10, 20, 40, 80, 120, 160, 200, 250, 320, 500, 1000, 2500)


_BAND_NAMES = tuple(f"amount_band_{lower:g}" for lower in (0.0, *AMOUNT_BANDS))
_NO_BAND = dict.fromkeys(_BAND_NAMES, 0.0)


def amount_bands(x: dict[str, float]) -> dict[str, float]:
    """``x`` plus one indicator per amount band (a new dict: inputs are never mutated)."""
    band = bisect.bisect_right(AMOUNT_BANDS, x.get("amount", 0.0))
    out = {**x, **_NO_BAND}
    out[_BAND_NAMES[band]] = 1.0
    return out


def _logistic_regression() -> base.Estimator:
    return compose.Pipeline(
        compose.FuncTransformer(amount_bands),
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.4)),
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

    The score is ``w * p + (1 - w) * a``: ``a`` the detector's anomaly score in ``[0, 1]``,
    ``p`` the classifier's fraud probability, and ``w = n / (n + warmup_frauds)`` with
    ``n`` the number of labels learned of the scarcer class (usually frauds). A new
    deployment thus scores by anomaly alone and hands over to the classifier as
    confirmed frauds (and legitimate transactions) accumulate.

    Parameters
    ----------
    detector
        Unsupervised River anomaly detector scoring in ``[0, 1]`` (default:
        ``TailSurprise`` over the amount and the amount relative to the card's average).
    classifier
        Supervised River binary classifier (default: standard scaling and logistic
        regression).
    warmup_frauds
        Fraud labels at which classifier and detector weigh the same.
    fraud_weight
        Sample weight of a fraud label, to offset how rare frauds are.
    protect_above
        The detector does not learn transactions it scores at or above this (as River's
        ``QuantileFilter`` protects its detector), so it does not get used to the frauds
        it should flag.

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
        protect_above: float = 0.99,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.warmup_frauds = warmup_frauds
        self.fraud_weight = fraud_weight
        self.protect_above = protect_above
        # River's type hints do not follow pipelines through: the detector scores and
        # learns without a target, the classifier takes ``w`` for its last step.
        self._detector: typing.Any = (
            detector.clone() if detector is not None else _default_detector()
        )
        self._classifier: typing.Any = (
            classifier.clone() if classifier is not None else _default_classifier()
        )
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
                # Ratios and counts are heavy-tailed: compress them.
                view[name] = math.log1p(max(value, 0.0)) if name != "log_amount" else value
        return view

    def classifier_weight(self) -> float:
        # A classifier that has seen one class only knows nothing: it weighs nothing until
        # both have arrived, then grows with the scarcer of the two (usually frauds).
        n = min(self._labels["fraud"], self._labels["legit"])
        return n / (n + self.warmup_frauds) if n else 0.0

    def predict_parts(self, x: dict[str, float]) -> HybridScore:
        """Score ``x`` and say how: anomaly, fraud probability and the classifier's weight."""
        a = self._detector.score_one(self._detector_view(x))
        w = self.classifier_weight()
        if w == 0.0:
            return HybridScore(a, a, None, 0.0)
        p = self._classifier.predict_proba_one(x).get(True, 0.0)
        return HybridScore(w * p + (1.0 - w) * a, a, p, w)

    def score_one(self, x: dict[str, float]) -> float:
        return self.predict_parts(x).score

    def learn_unlabelled(self, x: dict[str, float], score: HybridScore | None = None) -> None:
        """Let the detector learn a transaction just scored (unless it looked anomalous)."""
        view = self._detector_view(x)
        a = score.anomaly if score is not None else self._detector.score_one(view)
        if view and a < self.protect_above:
            self._detector.learn_one(view)
        self.n_scored_unlabelled += 1

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn the truth about a transaction from the features it had when scored."""
        self._classifier.learn_one(x, bool(y), w=self.fraud_weight if y else 1.0)
        self._labels["fraud" if y else "legit"] += 1
