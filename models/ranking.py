"""Threshold-free ranking metrics: ROC AUC and average precision.

Pure numpy, no I/O. They judge how well scores rank frauds above legitimate
transactions, whatever the threshold: the figures the detector reports from the window of
labelled outcomes a :class:`models.quality.QualityTracker` keeps, and the weekly
evaluation reports of a replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["average_precision", "roc_auc"]


def _check_inputs(
    y_true: Sequence[bool | int], scores: Sequence[float]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Validate and convert labels (0/1 or bool) and scores to numpy arrays."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError("y_true and scores must be one-dimensional")
    if y.shape[0] != s.shape[0]:
        raise ValueError(
            f"y_true and scores have different lengths ({y.shape[0]} and {s.shape[0]})"
        )
    if y.shape[0] == 0:
        raise ValueError("y_true and scores are empty")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y_true must contain only 0/1 or False/True labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (no NaN or infinity)")
    return y.astype(bool), s


def roc_auc(y_true: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic, ties counted half.

    Equals ``sklearn.metrics.roc_auc_score``: the probability that a random positive
    scores higher than a random negative, plus half the probability of a tie.

    Raises
    ------
    ValueError
        If only one class is present, the lengths differ, or a score is not finite.
    """
    y, s = _check_inputs(y_true, scores)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "AUC ROC is undefined when only one class is present in y_true "
            f"({n_pos} positives, {n_neg} negatives)"
        )
    # Average ranks (1-based) with ties sharing the mean of their positions.
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], sorted_s.shape[0]]
    group_ranks = (starts + 1 + ends) / 2.0  # mean of positions starts+1 .. ends
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(group_ranks, ends - starts)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true: Sequence[bool | int], scores: Sequence[float]) -> float:
    """Average precision, identical to ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds in descending
    order; transactions with equal scores enter at the same threshold (no interpolation).

    Raises
    ------
    ValueError
        If there is no positive, the lengths differ, or a score is not finite.
    """
    y, s = _check_inputs(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision is undefined when y_true has no positive")
    order = np.argsort(-s, kind="mergesort")
    sorted_s = s[order]
    sorted_y = y[order]
    # Last index of each group of equal scores: a threshold takes in the whole group.
    last = np.r_[np.flatnonzero(sorted_s[1:] != sorted_s[:-1]), sorted_s.shape[0] - 1]
    tps = np.cumsum(sorted_y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
