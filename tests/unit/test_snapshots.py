"""Recovery snapshots: a store written by another snapshot format is refused, not misread."""

from __future__ import annotations

import pickle

import pytest

from detector import __version__
from detector.flow.snapshots import (
    READABLE_FORMATS,
    SNAPSHOT_FORMAT,
    RecoveryStoreError,
    freeze,
    thaw,
)
from detector.scoring import ModelState, new_model_state
from detector.settings import ScoringSettings


def test_a_snapshot_thaws_as_it_was_frozen() -> None:
    state = new_model_state(ScoringSettings(presume_legit_days=0))
    thawed = thaw(freeze(state), ModelState)
    assert list(thawed.models) == list(state.models)
    assert thawed.deciding == state.deciding


def test_a_snapshot_of_another_format_is_refused_with_a_clear_message() -> None:
    older = (
        min(READABLE_FORMATS) - 1,
        "0.9.0",
        pickle.dumps(new_model_state(ScoringSettings(presume_legit_days=0))),
    )
    with pytest.raises(RecoveryStoreError) as refused:
        thaw(older, ModelState)
    message = str(refused.value)
    assert f"written by fraudstream 0.9.0 (format {min(READABLE_FORMATS) - 1})" in message
    assert f"this is fraudstream {__version__} (format {SNAPSHOT_FORMAT})" in message
    assert "FRAUDSTREAM_RECOVERY_DIR" in message


def test_a_snapshot_without_a_format_is_refused() -> None:
    with pytest.raises(RecoveryStoreError, match="written by an older fraudstream"):
        thaw(pickle.dumps({"models": {}}), ModelState)


def test_a_snapshot_of_another_kind_is_refused() -> None:
    with pytest.raises(RecoveryStoreError):
        thaw(freeze({"not": "a model state"}), ModelState)
