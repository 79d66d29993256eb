"""Contract records for tests, with plain defaults that each test overrides as it needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detector.contracts import ModelQuality, ModelStatus
from detector.settings import GROUPS, Settings


def model_status(
    name: str = "hybrid-tail-logreg", *, quality: dict[str, Any] | None = None, **fields: Any
) -> ModelStatus:
    """A ``ModelStatus`` of ``name``; ``fields`` and ``quality`` override the defaults."""
    base: dict[str, Any] = {
        "model_name": name,
        "model_version": "0.1.0",
        "deciding": True,
        "transactions_scored": 100,
        "decisions": {"allow": 98, "review": 1, "block": 1},
        "labels_learned": {"fraud": 1, "legit": 3},
        "labels_by_source": {"analyst": 4},
        "classifier_weight": 0.2,
        "threshold_mode": "volume",
        "review_threshold": 0.6,
        "block_threshold": 0.9,
        "review_share": 0.01,
        "block_share": 0.001,
        "last_control_id": None,
        "last_label_at": None,
        "emitted_at": datetime(2026, 11, 26, tzinfo=UTC),
    }
    figures: dict[str, Any] = {
        "window": 4,
        "frauds": 1,
        "auc": None,
        "average_precision": None,
        "alert_precision": None,
        "alert_recall": None,
    }
    return ModelStatus(**(base | fields), quality=ModelQuality(**(figures | (quality or {}))))


def settings_of(**fields: Any) -> Settings:
    """``Settings`` with ``fields``, named as their variables are, each in its group."""
    groups = _by_group(fields)
    return Settings.model_validate({g: GROUPS[g](**values) for g, values in groups.items()})


def settings_with(settings: Settings, **fields: Any) -> Settings:
    """A copy of ``settings`` with ``fields``, named as their variables are, changed."""
    groups = _by_group(fields)
    return settings.model_copy(
        update={g: getattr(settings, g).model_copy(update=values) for g, values in groups.items()}
    )


def _by_group(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        [group] = [g for g, kind in GROUPS.items() if name in kind.model_fields]
        groups.setdefault(group, {})[name] = value
    return groups
