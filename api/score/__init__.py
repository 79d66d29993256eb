"""Synchronous scoring (``POST /api/score``): ``scorer`` (requests and replies over
Kafka) and ``store`` (the decisions kept to answer the same transaction again)."""

from __future__ import annotations

from api.score.scorer import (
    Answer,
    RequestTooLarge,
    ScoreConflict,
    Scorer,
    fallback_decision,
    same_transaction,
)
from api.score.store import purge_replies, store_replies, stored_decision

__all__ = [
    "Answer",
    "RequestTooLarge",
    "ScoreConflict",
    "Scorer",
    "fallback_decision",
    "purge_replies",
    "same_transaction",
    "store_replies",
    "stored_decision",
]
