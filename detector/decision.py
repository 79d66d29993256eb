"""From a score to allow, review or block."""

from __future__ import annotations

from dataclasses import dataclass

from detector.contracts import DecisionKind


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
        if score >= self.block:
            return "block"
        if score >= self.review:
            return "review"
        return "allow"
