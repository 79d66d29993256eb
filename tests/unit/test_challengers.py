"""Model versions, run-time challengers and roll backs, in the scoring core."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from detector import __version__
from detector.challengers import build_classifier, config_hash, version_of
from detector.checkpoints import Checkpoints, last_generation
from detector.contracts import ClassifierKind, Control, HyperParameters, ModelSpec
from detector.core import ScoringCore
from detector.items import ControlApplied, Rejected, Scored
from detector.scoring import ModelState, ensure_models, new_model_state
from detector.settings import ScoringSettings
from models import CLASSIFIERS
from tests.unit.test_control import NOW, control, set_deciding, set_fixed
from tests.unit.test_scoring import background, label

LOGREG, TREE = "hybrid-tail-logreg", "hybrid-tail-tree"


def spec(name: str = "tree-fast", kind: str = "tree", **params: Any) -> ModelSpec:
    return ModelSpec(name=name, kind=kind, params=HyperParameters(**params))  # type: ignore[arg-type]


def add(model: ModelSpec, control_id: str = "c-add") -> Control:
    return control(control_id, action="add_model", model_spec=model)


def retire(name: str, control_id: str = "c-retire") -> Control:
    return control(control_id, action="retire_model", model_name=name)


def rollback(name: str, checkpoint_id: str, control_id: str = "c-back") -> Control:
    return control(
        control_id, action="rollback_model", model_name=name, checkpoint_id=checkpoint_id
    )


def config(**fields: Any) -> ScoringSettings:
    return ScoringSettings(checkpoint_every_labels=10, checkpoints_kept=3, **fields)


def run(core: ScoringCore, count: int, *, start: int = 0, frauds_every: int = 7) -> list[Scored]:
    """Score ``count`` background transactions from ``start``, labelling each (every
    ``frauds_every``-th a fraud)."""
    out = []
    for i, t in enumerate(background()[start : start + count]):
        out.append(core.score(t))
        core.learn(label(t, "fraud" if i % frauds_every == 0 else "legit", days=0.001))
    return out


# --- versions ---------------------------------------------------------------------------


def test_the_classifier_kinds_of_the_contract_are_the_models() -> None:
    assert set(get_args(ClassifierKind)) == set(CLASSIFIERS)


def test_the_config_hash_is_stable_and_follows_the_parameters() -> None:
    cfg = ScoringSettings()
    base = config_hash(spec(), cfg)
    assert base == config_hash(spec(name="another-name"), cfg)  # the name is no parameter
    assert len(base) == 8 and int(base, 16) >= 0
    assert config_hash(spec(grace_period=50), cfg) != base
    assert config_hash(spec(seed=7), cfg) != base
    assert config_hash(spec(kind="forest"), cfg) != base
    assert config_hash(spec(warmup_frauds=10), cfg) != base
    assert config_hash(spec(), ScoringSettings(classifier_warmup_frauds=10)) != base
    assert config_hash(spec(), ScoringSettings(calibration_base_rate=0.02)) != base
    logreg = spec(kind="logreg")
    assert config_hash(spec(kind="logreg", learning_rate=0.05), cfg) != config_hash(logreg, cfg)
    assert config_hash(spec(kind="logreg", l2=0.01), cfg) != config_hash(logreg, cfg)
    # a given value equal to the kind's default is the same model
    assert config_hash(spec(grace_period=100), cfg) == base


def test_the_hash_does_not_depend_on_the_process() -> None:
    # functions and classes hash by their import path, not their address
    import subprocess
    import sys

    code = (
        "from detector.challengers import config_hash; from detector.contracts import ModelSpec;"
        "from detector.settings import ScoringSettings;"
        "print(config_hash(ModelSpec(name='m', kind='logreg'), ScoringSettings()))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == config_hash(spec(kind="logreg"), ScoringSettings())


def test_hyper_parameters_reach_the_classifier() -> None:
    tree = build_classifier(spec(grace_period=30, seed=5))
    assert (tree.grace_period, tree.seed) == (30, 5)
    forest = build_classifier(spec(kind="forest", n_models=3))
    assert forest.n_models == 3
    logreg = build_classifier(spec(kind="logreg", learning_rate=0.05, l2=0.5))
    params = logreg._get_params()["LogisticRegression"]
    assert params["l2"] == 0.5
    assert params["optimizer"][1]["lr"][1]["learning_rate"] == 0.05


def test_a_version_names_package_config_and_generation() -> None:
    version = version_of(spec(), ScoringSettings(), 3)
    assert version == f"{__version__}+{config_hash(spec(), ScoringSettings())}.3"


def test_decisions_and_statuses_carry_the_deciding_models_version() -> None:
    core = ScoringCore(ScoringSettings(challengers=("tree",)))
    scored = core.score(background()[0])
    logreg, tree = core.model.models[LOGREG], core.model.models[TREE]
    assert scored.model_version == logreg.version != tree.version
    assert scored.model_version.startswith(f"{__version__}+")
    assert scored.model_version.endswith(".1")
    statuses = {s.model_name: s for s in core.statuses()}
    assert statuses[LOGREG].model_version == logreg.version
    assert statuses[TREE].model_version == tree.version
    assert statuses[TREE].spec == ModelSpec(name=TREE, kind="tree")
    core.apply(set_deciding(TREE))
    assert core.score(background()[1]).model_version == tree.version


# --- bad specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "x", "kind": "svm"}, "literal_error"),
        ({"name": "Bad Name", "kind": "tree"}, "string_pattern_mismatch"),
        ({"name": "x", "kind": "tree", "params": {"learning_rate": 0.1}}, "tree takes no"),
        ({"name": "x", "kind": "logreg", "params": {"n_models": 3}}, "logreg takes no"),
        ({"name": "x", "kind": "forest", "params": {"n_models": 0}}, "greater_than_equal"),
        ({"name": "x", "kind": "forest", "params": {"code": "import os"}}, "extra_forbidden"),
        ({"name": "x", "kind": "logreg", "params": {"l2": float("nan")}}, "finite_number"),
    ],
)
def test_bad_specs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        ModelSpec.model_validate(fields)
    text = str(error.value) + str([e["type"] for e in error.value.errors()])
    assert message in text


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "add_model"},
        {"action": "retire_model"},
        {"action": "rollback_model", "model_name": LOGREG},
    ],
)
def test_model_controls_need_their_arguments(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="needs"):
        Control(control_id="c", requested_by="a", requested_at=NOW, **fields)


# --- challengers at run time ------------------------------------------------------------


def test_a_challenger_added_at_run_time_scores_in_shadow_and_learns() -> None:
    core = ScoringCore(config())
    core.apply(set_fixed(0.3, 0.9))
    run(core, 40)
    out = core.apply(add(spec(grace_period=20)))
    assert isinstance(out, ControlApplied)
    challenger = core.model.models["tree-fast"]
    # fresh, under the thresholds in force
    assert challenger.transactions_scored == 0
    assert sum(challenger.scorer.labels_learned.values()) == 0
    assert challenger.thresholds.review == 0.3 and challenger.thresholds.block == 0.9
    assert challenger.scorer.classifier is not None
    assert challenger.scorer.classifier.grace_period == 20
    decided = run(core, 20, start=40)
    assert all(s.model_name == LOGREG for s in decided)  # in shadow
    assert challenger.transactions_scored == 20
    assert sum(challenger.scorer.labels_learned.values()) == 20
    status = {s.model_name: s for s in core.statuses()}["tree-fast"]
    assert not status.deciding and status.spec == spec(grace_period=20)
    assert status.model_version == version_of(spec(grace_period=20), core.config, 1)


def test_a_challenger_can_decide_and_the_former_one_be_retired() -> None:
    core = ScoringCore(config())
    core.apply(add(spec()))
    assert isinstance(core.apply(set_deciding("tree-fast", "c-2")), ControlApplied)
    assert isinstance(core.apply(retire(LOGREG)), ControlApplied)
    assert list(core.model.models) == ["tree-fast"]
    assert core.score(background()[0]).model_name == "tree-fast"
    assert [s.model_name for s in core.statuses()] == ["tree-fast"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: retire(LOGREG), "is the deciding model and cannot be retired"),
        (lambda: retire("nope"), "unknown model 'nope'"),
        (lambda: add(spec(name=LOGREG, kind="tree")), "runs already"),
        (lambda: rollback(LOGREG, "1-10"), "no checkpoint '1-10'; the checkpoints are none yet"),
        (lambda: rollback("nope", "1-10"), "unknown model 'nope'"),
    ],
)
def test_model_controls_that_cannot_apply_are_rejected_and_change_nothing(
    make: Any, message: str
) -> None:
    core = ScoringCore(config())
    before = pickle.dumps(core.model.models[LOGREG].scorer)
    out = core.apply(make())
    assert isinstance(out, Rejected) and message in out.error
    assert list(core.model.models) == [LOGREG]
    assert core.model.last_control_id is None
    assert pickle.dumps(core.model.models[LOGREG].scorer) == before


# --- checkpoints and roll back --------------------------------------------------------


def test_checkpoints_are_saved_every_n_labels_and_the_last_few_kept() -> None:
    core = ScoringCore(config())
    run(core, 45)
    slot = core.model.models[LOGREG]
    assert slot.checkpoints.ids() == ["1-20", "1-30", "1-40"]
    [status] = core.statuses()
    assert [c.checkpoint_id for c in status.checkpoints] == ["1-20", "1-30", "1-40"]
    assert [c.labels_learned for c in status.checkpoints] == [20, 30, 40]
    assert {c.model_version for c in status.checkpoints} == {slot.version}


def test_a_roll_back_restores_the_model_and_is_a_new_generation() -> None:
    core = ScoringCore(config(challengers=("tree",)))
    run(core, 30)
    slot = core.model.models[LOGREG]
    saved = pickle.dumps((slot.scorer, slot.calibrator))
    version = slot.version
    run(core, 20, start=30)
    probes = [core.score(t).features for t in background()[150:160]]
    assert slot.scorer.labels_learned != pickle.loads(saved)[0].labels_learned
    out = core.apply(rollback(LOGREG, "1-30"))
    assert isinstance(out, ControlApplied)
    slot = core.model.models[LOGREG]
    scorer, calibrator = pickle.loads(saved)
    assert slot.scorer.labels_learned == scorer.labels_learned
    assert slot.calibrator.labels_learned == calibrator.labels_learned
    assert [slot.scorer.predict_parts(x) for x in probes] == [
        scorer.predict_parts(x) for x in probes
    ]
    assert slot.generation == 2 and slot.version == version.removesuffix(".1") + ".2"
    assert core.model.models[TREE].generation == 1  # the other model is untouched
    # it scores under its new version, and checkpoints again
    assert core.score(background()[200]).model_version == slot.version
    for i, t in enumerate(background()[300:310]):
        core.score(t)
        core.learn(label(t, "fraud" if i == 0 else "legit", days=0.001))
    assert slot.checkpoints.ids()[-1] == "2-40"


def test_a_state_from_a_snapshot_keeps_challengers_versions_and_checkpoints(tmp_path: Path) -> None:
    cfg = config().placed(waiting_store=tmp_path / "waiting-0.db")
    core = ScoringCore(cfg)
    core.apply(add(spec()))
    run(core, 25)
    slot = core.model.models["tree-fast"]
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "tree-fast").glob("*/*.model"))
    assert files == ["1-10.model", "1-20.model"]
    restored = ensure_models(pickle.loads(pickle.dumps(core.model)), cfg)
    again = restored.models["tree-fast"]
    assert again.version == slot.version and again.spec == slot.spec
    assert again.checkpoints.ids() == ["1-10", "1-20"]
    # the checkpoint is read back from its file
    core.model = restored
    assert isinstance(core.apply(rollback("tree-fast", "1-10")), ControlApplied)
    assert sum(again.scorer.labels_learned.values()) == 10 and again.generation == 2
    # a fresh start where checkpoints are left is a new generation
    fresh = new_model_state(cfg.model_copy(update={"challengers": ("tree",)}))
    assert last_generation(tmp_path / "checkpoints", LOGREG) == 1
    assert fresh.models[LOGREG].generation == 2
    # retiring a model removes its files
    core.apply(set_deciding("tree-fast", "c-2"))
    core.apply(retire(LOGREG, "c-3"))
    assert not list((tmp_path / "checkpoints" / LOGREG).glob("*/*.model"))


def test_a_state_from_before_model_versions_gets_one() -> None:
    state = new_model_state(config())
    slot = state.models[LOGREG]
    for name in ("spec", "generation", "version", "checkpoints"):
        del slot.__dict__[name]
    old: ModelState = pickle.loads(pickle.dumps(state))
    restored = ensure_models(old, config())
    again = restored.models[LOGREG]
    assert again.spec == ModelSpec(name=LOGREG, kind="logreg")
    assert again.version == version_of(again.spec, config(), 1)
    assert isinstance(again.checkpoints, Checkpoints) and again.checkpoints.ids() == []


def test_a_damaged_checkpoint_file_is_refused(tmp_path: Path) -> None:
    cfg = config().placed(waiting_store=tmp_path / "waiting-0.db")
    core = ScoringCore(cfg)
    run(core, 12)
    [path] = (tmp_path / "checkpoints" / LOGREG).glob("*/1-10.model")
    path.write_bytes(path.read_bytes()[:-10])
    out = core.apply(rollback(LOGREG, "1-10"))
    assert isinstance(out, Rejected) and "cannot be read" in out.error
    assert core.model.models[LOGREG].generation == 1


def test_every_shard_adds_checkpoints_and_rolls_back_alike() -> None:
    core = ScoringCore(config().placed(shards=2))
    assert isinstance(core.apply(add(spec())), ControlApplied)
    run(core, 35)
    for shard in core.shards:
        assert shard.models["tree-fast"].checkpoints.ids() == ["1-10", "1-20", "1-30"]
    status = {s.model_name: s for s in core.statuses()}["tree-fast"]
    assert [c.checkpoint_id for c in status.checkpoints] == ["1-10", "1-20", "1-30"]
    assert isinstance(core.apply(rollback("tree-fast", "1-20")), ControlApplied)
    versions = {shard.models["tree-fast"].version for shard in core.shards}
    assert len(versions) == 1 and versions.pop().endswith(".2")
    assert all(sum(s.models["tree-fast"].scorer.labels_learned.values()) == 20 for s in core.shards)
