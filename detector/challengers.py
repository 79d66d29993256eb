"""What a model is and which version of it runs; challengers added, retired and rolled
back at run time.

A model is built from a ``ModelSpec`` (a classifier kind from ``models.CLASSIFIERS`` and a
closed set of typed hyper-parameters, never code). Its version says which model made a
decision: ``<package>+<config hash>.<generation>``. The config hash is a short stable hash
of everything that makes the model what it is (the classifier and its parameters, the
warm-up, the calibration, the features); the generation counts the model's fresh starts
and roll backs. A restart from a recovery snapshot keeps the model, and so its version.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from river import base, optim

from detector import __version__
from detector.checkpoints import CheckpointError, Checkpoints, checkpoint_root, last_generation
from detector.contracts import Control, HyperParameters, ModelSpec
from detector.settings import ScoringSettings
from models import CLASSIFIERS, FEATURES, HybridScorer

if TYPE_CHECKING:
    from detector.scoring import ModelSlot, ModelState

HASH_LENGTH = 8
# The control actions on models that this module applies.
MODEL_ACTIONS = frozenset({"add_model", "retire_model", "rollback_model"})


class ChallengerError(ValueError):
    """A model control that cannot be applied (the message says why)."""


def configured_spec(kind: str, name: str) -> ModelSpec:
    """The spec of a model of the configuration: kind ``kind``, default parameters."""
    return ModelSpec(name=name, kind=kind, params=HyperParameters())  # type: ignore[arg-type]


def build_classifier(spec: ModelSpec) -> base.Estimator:
    """The classifier of ``spec``: the kind's own, with the hyper-parameters given."""
    classifier = CLASSIFIERS[spec.kind]()
    p = spec.params
    if spec.kind == "logreg":
        changes: dict[str, Any] = {}
        if p.learning_rate is not None:
            changes["optimizer"] = (optim.AdaGrad, {"lr": p.learning_rate})
        if p.l2 is not None:
            changes["l2"] = p.l2
        return classifier.clone({"LogisticRegression": changes}) if changes else classifier
    wanted = {"grace_period": p.grace_period, "n_models": p.n_models, "seed": p.seed}
    changes = {k: v for k, v in wanted.items() if v is not None}
    return classifier.clone(changes) if changes else classifier


def warmup_of(spec: ModelSpec, config: ScoringSettings) -> int:
    return spec.params.warmup_frauds or config.classifier_warmup_frauds


def build_scorer(spec: ModelSpec, config: ScoringSettings) -> HybridScorer:
    return HybridScorer(classifier=build_classifier(spec), warmup_frauds=warmup_of(spec, config))


def _plain(value: object) -> object:
    """River parameters as JSON: classes and functions by their import path (never a
    memory address), tuples as lists, so that the hash is the same in every process."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def config_hash(spec: ModelSpec, config: ScoringSettings) -> str:
    """A short stable hash of what makes the model what it is (not of its name)."""
    scorer = build_scorer(spec, config)
    described = {
        "kind": spec.kind,
        "classifier": scorer.classifier._get_params() if scorer.classifier is not None else None,
        "hybrid": {
            "warmup_frauds": scorer.warmup_frauds,
            "fraud_weight": scorer.fraud_weight,
            "protect_above": scorer.protect_above,
            "detector": (type(scorer._detector).__qualname__, scorer._detector._get_params()),
        },
        "calibration": {
            "base_rate": config.calibration_base_rate,
            "half_life": config.calibration_half_life_labels,
        },
        "features": list(FEATURES),
    }
    text = json.dumps(_plain(described), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def version_of(spec: ModelSpec, config: ScoringSettings, generation: int) -> str:
    """``<package>+<config hash>.<generation>``."""
    return f"{__version__}+{config_hash(spec, config)}.{generation}"


def new_checkpoints(name: str, config: ScoringSettings) -> tuple[Checkpoints, int]:
    """A model's checkpoints, placed, and its first generation (one past those on disk)."""
    root = checkpoint_root(config.waiting_store)
    checkpoints = Checkpoints(config.checkpoint_every_labels, config.checkpoints_kept)
    checkpoints.place(
        root, name, every=config.checkpoint_every_labels, keep=config.checkpoints_kept
    )
    return checkpoints, last_generation(root, name) + 1


def ensure_identity(slot: ModelSlot, config: ScoringSettings) -> None:
    """Give a model of a state recovered from an older snapshot its spec, version and
    checkpoints (generation 1: the model it was), and place its checkpoints' folder."""
    if getattr(slot, "spec", None) is None:
        kind = slot.name.removeprefix("hybrid-tail-")
        slot.spec = configured_spec(kind if kind in CLASSIFIERS else "logreg", slot.name)
        slot.generation = 1
        slot.version = version_of(slot.spec, config, 1)
    if getattr(slot, "checkpoints", None) is None:
        slot.checkpoints = Checkpoints(config.checkpoint_every_labels, config.checkpoints_kept)
    slot.checkpoints.place(
        checkpoint_root(config.waiting_store),
        slot.name,
        every=config.checkpoint_every_labels,
        keep=config.checkpoints_kept,
    )


def save_checkpoint(slot: ModelSlot) -> None:
    """Save the model's state if it is due (called after each label it learns)."""
    learned = slot.scorer._labels  # per label: without the copy ``labels_learned`` makes
    if slot.checkpoints.due(learned["fraud"] + learned["legit"]):
        slot.checkpoints.save(
            slot.scorer, slot.calibrator, generation=slot.generation, version=slot.version
        )


# --- the controls -----------------------------------------------------------------------


def apply_model_control(state: ModelState, control: Control, config: ScoringSettings) -> None:
    """Apply ``add_model``, ``retire_model`` or ``rollback_model``, or raise
    ``ChallengerError`` and change nothing."""
    if control.action == "add_model":
        assert control.model_spec is not None  # the contract requires it
        add_model(state, control.model_spec, config)
        return
    name = control.model_name
    assert name is not None  # the contract requires it
    if name not in state.models:
        raise ChallengerError(
            f"unknown model {name!r}; the models are {', '.join(repr(n) for n in state.models)}"
        )
    if control.action == "retire_model":
        retire_model(state, name)
    else:
        assert control.checkpoint_id is not None
        rollback_model(state, name, control.checkpoint_id, config)


def add_model(state: ModelState, spec: ModelSpec, config: ScoringSettings) -> ModelSlot:
    """A new challenger: fresh, under the thresholds in force, scoring in shadow."""
    from detector.scoring import new_model_slot, thresholds_like_decider

    if spec.name in state.models:
        raise ChallengerError(f"a model named {spec.name!r} runs already")
    slot = new_model_slot(spec.kind, config, spec=spec)
    thresholds_like_decider(state, slot)
    state.models[slot.name] = slot
    return slot


def retire_model(state: ModelState, name: str) -> None:
    """Stop a challenger (its checkpoints go with it); the deciding model stays."""
    if name == state.deciding:
        raise ChallengerError(
            f"{name!r} is the deciding model and cannot be retired: make another model decide first"
        )
    state.models.pop(name).checkpoints.clear()


def rollback_model(
    state: ModelState, name: str, checkpoint_id: str, config: ScoringSettings
) -> ModelSlot:
    """Restore a model's scorer and calibration from one of its checkpoints: a new
    generation of the model."""
    slot = state.models[name]
    try:
        restored = slot.checkpoints.load(checkpoint_id)
    except CheckpointError as error:
        raise ChallengerError(f"model {name!r}: {error}") from error
    slot.scorer = restored.scorer
    slot.calibrator = restored.calibrator
    slot.window.scale = slot.calibrator.predict_one
    slot.generation += 1
    assert slot.spec is not None  # every model has one (``ensure_identity``)
    slot.version = version_of(slot.spec, config, slot.generation)
    return slot
