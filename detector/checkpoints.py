"""Checkpoints of a model: saved states (scorer and calibration) it can be rolled back to.

A model saves one every ``checkpoint_every_labels`` labels it learns and keeps the last
``checkpoints_kept``. Every shard of the model step learns every label, so the shards
save their checkpoints at the same counts, under the same ids (``<generation>-<labels
learned>``), each of its own copy of the model.

In the detector a checkpoint is a model file (``models.persistence``: a header checked
before anything is unpickled) in a folder beside the recovery snapshots; the state keeps
only the list. The offline ``ScoringCore`` keeps them in memory. A rollback names a
checkpoint by id and the detector reads its own file: no model ever travels over the
network.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from detector import __version__
from detector.contracts import CheckpointInfo
from models import HybridScorer, ScoreCalibrator
from models.persistence import IncompatibleModelError, load_model, save_model

log = structlog.get_logger(__name__)

SUFFIX = ".model"
_ID = re.compile(r"^([0-9]+)-[0-9]+$")


class CheckpointError(ValueError):
    """A checkpoint that is not there, or cannot be read."""


@dataclass
class ModelCheckpoint:
    """What a checkpoint holds: the model's scorer and calibrator."""

    scorer: HybridScorer
    calibrator: ScoreCalibrator


def checkpoint_root(waiting_store: Path | None) -> Path | None:
    """The folder of the detector's checkpoints (beside its store of waiting features,
    and so beside its recovery snapshots), or None: in memory."""
    return waiting_store.parent / "checkpoints" if waiting_store is not None else None


def generation_of(checkpoint_id: str) -> int:
    match = _ID.match(checkpoint_id)
    return int(match.group(1)) if match else 0


def last_generation(root: Path | None, name: str) -> int:
    """The highest generation among the checkpoints of model ``name`` on disk (0: none):
    a model that starts afresh where an earlier one left checkpoints is a new generation."""
    if root is None or not (root / name).is_dir():
        return 0
    found = [generation_of(path.stem) for path in (root / name).glob(f"*/*{SUFFIX}")]
    return max(found, default=0)


@dataclass
class Checkpoints:
    """The checkpoints of one model (of one shard), newest last.

    ``folder`` is where its files live (None: in memory, in ``kept``); it is not part of
    the state's identity, the detector places it again on resume (``place``).
    """

    every: int = 1000
    keep: int = 5
    # a folder of its own under the model's: shards and processes share the root
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    saved: list[CheckpointInfo] = field(default_factory=list)
    kept: dict[str, bytes] = field(default_factory=dict)
    folder: Path | None = None

    def place(self, root: Path | None, name: str, *, every: int, keep: int) -> None:
        self.folder = root / name / self.token if root is not None else None
        self.every, self.keep = every, keep

    def due(self, labels: int) -> bool:
        """Whether a model that has learned ``labels`` labels saves a checkpoint now."""
        return labels > 0 and labels % self.every == 0

    def ids(self) -> list[str]:
        return [info.checkpoint_id for info in self.saved]

    def save(
        self, scorer: HybridScorer, calibrator: ScoreCalibrator, *, generation: int, version: str
    ) -> CheckpointInfo:
        labels = sum(scorer.labels_learned.values())
        info = CheckpointInfo(
            checkpoint_id=f"{generation}-{labels}",
            saved_at=datetime.now(UTC),
            labels_learned=labels,
            model_version=version,
        )
        content = ModelCheckpoint(scorer, calibrator)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_model(content, self._path(info.checkpoint_id), model_version=__version__)
        else:
            self.kept[info.checkpoint_id] = pickle.dumps(content, pickle.HIGHEST_PROTOCOL)
        self.saved = [i for i in self.saved if i.checkpoint_id != info.checkpoint_id]
        self.saved.append(info)
        while len(self.saved) > self.keep:
            self._drop(self.saved.pop(0).checkpoint_id)
        return info

    def load(self, checkpoint_id: str) -> ModelCheckpoint:
        """The scorer and calibrator of a checkpoint (fresh objects)."""
        if checkpoint_id not in self.ids():
            known = ", ".join(self.ids()) or "none yet"
            raise CheckpointError(f"no checkpoint {checkpoint_id!r}; the checkpoints are {known}")
        if self.folder is None:
            loaded = pickle.loads(self.kept[checkpoint_id])
            assert isinstance(loaded, ModelCheckpoint)
            return loaded
        try:
            return load_model(
                self._path(checkpoint_id), model_version=__version__, expected_type=ModelCheckpoint
            )
        except (OSError, IncompatibleModelError) as error:
            unreadable = f"checkpoint {checkpoint_id!r} cannot be read: {error}"
            raise CheckpointError(unreadable) from error

    def clear(self) -> None:
        """Delete every checkpoint (the model is retired)."""
        for checkpoint_id in self.ids():
            self._drop(checkpoint_id)
        self.saved = []

    def _path(self, checkpoint_id: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{checkpoint_id}{SUFFIX}"

    def _drop(self, checkpoint_id: str) -> None:
        self.kept.pop(checkpoint_id, None)
        if self.folder is not None:
            with contextlib.suppress(OSError):
                self._path(checkpoint_id).unlink(missing_ok=True)

    def __getstate__(self) -> dict[str, object]:
        # the folder is the run's (``place``); the bytes kept in memory travel
        return {**self.__dict__, "folder": None}
