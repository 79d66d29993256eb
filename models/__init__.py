"""River model code of fraudstream: feature state and scorers, pure Python, no I/O.

Data enters as plain values passed by the detector's scoring core (a transaction's time,
amount, card and terminal; later its label) and leaves as return values: features
(``CardProfile``, ``TerminalProfile``), scores (``HybridScorer``), the probability of
fraud they mean (``ScoreCalibrator``) and quality figures (``QualityTracker`` with
``ranking``). Nothing here imports the detector, Kafka or Bytewax; ``persistence`` saves
and loads a model as bytes on a path the caller gives.
"""

from models.calibration import ScoreCalibrator
from models.card import CardProfile
from models.card_features import CARD_FEATURES
from models.hybrid import CLASSIFIERS, HybridScore, HybridScorer
from models.pending import PendingFeatures
from models.quality import LabelledOutcome, QualityTracker, RecalledScore
from models.terminal import TERMINAL_FEATURES, TerminalProfile

FEATURES: tuple[str, ...] = CARD_FEATURES + TERMINAL_FEATURES

__all__ = [
    "CARD_FEATURES",
    "CLASSIFIERS",
    "FEATURES",
    "TERMINAL_FEATURES",
    "CardProfile",
    "HybridScore",
    "HybridScorer",
    "LabelledOutcome",
    "PendingFeatures",
    "QualityTracker",
    "RecalledScore",
    "ScoreCalibrator",
    "TerminalProfile",
]
