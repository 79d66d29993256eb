"""River model code of fraudstream: feature state and scorers, pure Python, no I/O."""

from models.card import CardProfile
from models.card_features import CARD_FEATURES
from models.hybrid import CLASSIFIERS, HybridScore, HybridScorer
from models.pending import PendingFeatures
from models.quality import LabelledOutcome, QualityTracker
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
    "TerminalProfile",
]
