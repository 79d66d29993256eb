"""Model files: round trip, and refusals that happen before anything is unpickled."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import river
from typer.testing import CliRunner

from detector import __version__
from detector.cli import app
from detector.scoring import ModelState, new_model_state
from detector.settings import ScoringSettings
from models import HybridScorer
from models.persistence import (
    IncompatibleModelError,
    ModelHeader,
    load_model,
    read_header,
    save_model,
)

runner = CliRunner()


class _Boom(Exception):
    pass


def _explode() -> None:
    raise _Boom("unpickled!")


class _Bomb:
    """Unpickling this raises: proof that a refused file was never unpickled."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _explode, ()


def _trained_scorer() -> HybridScorer:
    model = HybridScorer(warmup_frauds=5)
    for i in range(400):
        model.learn_unlabelled({"log_amount": 3.0 + (i % 11) / 20, "card_amount_ratio": 1.0})
    for i in range(8):
        model.learn_one({"log_amount": 6.0 + i / 4, "card_amount_ratio": 8.0}, True)
        model.learn_one({"log_amount": 3.0 + i / 20, "card_amount_ratio": 1.0}, False)
    return model


PROBES = [{"log_amount": 2.0 + i / 3, "card_amount_ratio": 0.5 + i} for i in range(15)]


def _write(path: Path, header: dict[str, object], payload: bytes) -> None:
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


def _header(**overrides: object) -> dict[str, object]:
    payload = pickle.dumps(_Bomb())
    header: dict[str, object] = {
        "format": "fraudstream-model",
        "format_version": 1,
        "model_version": __version__,
        "river_version": river.__version__,
        "python_version": "3.11.0",
        "saved_at": datetime.now(UTC).isoformat(),
        "object_class": "models.hybrid.HybridScorer",
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    return {**header, **overrides}


def test_a_trained_scorer_scores_the_same_after_a_round_trip(tmp_path: Path) -> None:
    model = _trained_scorer()
    path = tmp_path / "model.fsm"
    save_model(model, path, model_version="9.9.9")
    loaded = load_model(path, model_version="9.9.9", expected_type=HybridScorer)
    assert loaded is not model
    assert loaded.labels_learned == model.labels_learned == {"fraud": 8, "legit": 8}
    assert loaded.classifier_weight() == model.classifier_weight() > 0
    assert [loaded.predict_parts(x) for x in PROBES] == [model.predict_parts(x) for x in PROBES]
    # Both keep learning the same way too.
    for m in (model, loaded):
        m.learn_one(PROBES[3], True)
    assert [loaded.score_one(x) for x in PROBES] == [model.score_one(x) for x in PROBES]
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is renamed, not left behind"


def test_the_header_is_readable_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "bomb.fsm"
    save_model(_Bomb(), path, model_version="1.2.3")
    header = read_header(path)
    assert isinstance(header, ModelHeader)
    assert header.format_version == 1
    assert header.model_version == "1.2.3"
    assert header.river_version == river.__version__
    assert header.object_class.endswith("test_persistence._Bomb")
    assert header.saved_at.tzinfo is not None
    assert abs((datetime.now(UTC) - header.saved_at).total_seconds()) < 60
    with pytest.raises(_Boom):  # it is a real bomb: only the header was read above
        load_model(path, model_version="1.2.3")


def test_another_river_version_is_refused_before_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "old.fsm"
    _write(path, _header(river_version="0.0.1"), pickle.dumps(_Bomb()))
    with pytest.raises(IncompatibleModelError) as refused:
        load_model(path, model_version=__version__)
    assert "0.0.1" in str(refused.value)
    assert river.__version__ in str(refused.value)
    assert read_header(path).river_version == "0.0.1"


def test_another_model_version_is_refused_before_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "other.fsm"
    _write(path, _header(model_version="0.0.9"), pickle.dumps(_Bomb()))
    with pytest.raises(IncompatibleModelError) as refused:
        load_model(path, model_version="0.1.0")
    assert "0.0.9" in str(refused.value)
    assert "0.1.0" in str(refused.value)


def test_a_model_saved_by_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.fsm"
    save_model(_trained_scorer(), path, model_version="0.1.0")
    with pytest.raises(IncompatibleModelError, match=r"0\.1\.0.*0\.2\.0"):
        load_model(path, model_version="0.2.0")


@pytest.mark.parametrize(
    "content",
    [
        pickle.dumps(_Bomb()),  # a bare pickle
        b"transaction_id,amount\n1,2.0\n",  # some CSV
        json.dumps({"format": "something-else"}).encode() + b"\n",
        b"",
        b"x" * 100_000,  # no newline where a header should be
    ],
    ids=["pickle", "csv", "other-json", "empty", "no-header-line"],
)
def test_a_file_that_is_no_model_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-a-model"
    path.write_bytes(content)
    with pytest.raises(IncompatibleModelError, match="is not a fraudstream model file"):
        read_header(path)
    with pytest.raises(IncompatibleModelError, match="is not a fraudstream model file"):
        load_model(path, model_version=__version__)


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.fsm"
    _write(path, _header(format_version=2), pickle.dumps(_Bomb()))
    with pytest.raises(IncompatibleModelError, match="format version 2"):
        load_model(path, model_version=__version__)


def test_a_truncated_payload_is_refused_before_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.fsm"
    save_model(_trained_scorer(), path, model_version="1")
    path.write_bytes(path.read_bytes()[:-10])
    assert read_header(path).model_version == "1"
    with pytest.raises(IncompatibleModelError, match="truncated or corrupted"):
        load_model(path, model_version="1")


def test_an_unexpected_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.fsm"
    save_model({"not": "a scorer"}, path, model_version="1")
    assert load_model(path, model_version="1") == {"not": "a scorer"}
    with pytest.raises(IncompatibleModelError, match=r"builtins\.dict.*HybridScorer"):
        load_model(path, model_version="1", expected_type=HybridScorer)


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.fsm"
    save_model({"kept": True}, path, model_version="1")
    with path.open() as handle, pytest.raises(TypeError):
        save_model({"file": handle}, path, model_version="1")  # open files do not pickle
    assert load_model(path, model_version="1") == {"kept": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fsm"]


def test_model_state_round_trips(tmp_path: Path) -> None:
    state = new_model_state(ScoringSettings(presume_legit_days=0, classifier_warmup_frauds=5))
    state.decider.scorer = _trained_scorer()
    state.decider.transactions_scored = 416
    state.labels_by_source["review"] += 16
    path = tmp_path / "state.fsm"
    save_model(state, path, model_version=__version__)
    loaded = load_model(path, model_version=__version__, expected_type=ModelState)
    assert loaded.decider.transactions_scored == 416
    assert loaded.labels_by_source == {"review": 16}
    assert loaded.decider.thresholds.decide(0.0) == state.decider.thresholds.decide(0.0)
    assert [loaded.decider.scorer.score_one(x) for x in PROBES] == [
        state.decider.scorer.score_one(x) for x in PROBES
    ]


def test_evaluate_saves_the_model_and_model_info_describes_it(tmp_path: Path) -> None:
    data = tmp_path / "sim.jsonl"
    result = runner.invoke(
        app,
        ["simulate", "--out", str(data), "--limit", "3000", "--seed", "5", "--customers", "100"],
    )
    assert result.exit_code == 0, result.output
    first = json.loads(data.read_text().splitlines()[0])["timestamp"]
    week = date.fromisoformat(first[:10]).isoformat()
    model_file = tmp_path / "model.fsm"
    result = runner.invoke(
        app, ["evaluate", str(data), "--test-week", week, "--save-model", str(model_file)]
    )
    assert result.exit_code == 0, result.output
    assert f"model written to {model_file}" in result.output
    state = load_model(model_file, model_version=__version__, expected_type=ModelState)
    assert state.decider.transactions_scored > 0

    result = runner.invoke(app, ["model-info", str(model_file)])
    assert result.exit_code == 0, result.output
    assert "detector.scoring.ModelState" in result.output
    assert f"river version: {river.__version__}" in result.output
    assert "labels learned: {'fraud':" in result.output
    assert "classifier weight:" in result.output


def test_model_info_reads_the_header_of_a_file_it_will_not_load(tmp_path: Path) -> None:
    path = tmp_path / "old.fsm"
    _write(path, _header(river_version="0.0.1"), pickle.dumps(_Bomb()))
    result = runner.invoke(app, ["model-info", str(path)])
    assert result.exit_code == 0, result.output
    assert "river version: 0.0.1" in result.output
    assert "not loadable here" in result.output

    path.write_bytes(b"not a model\n")
    result = runner.invoke(app, ["model-info", str(path)])
    assert result.exit_code == 1
    assert "not a fraudstream model file" in result.output


def test_evaluate_refuses_a_save_path_in_a_missing_directory(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    result = runner.invoke(
        app,
        ["evaluate", str(data), "--save-model", str(tmp_path / "nowhere" / "m.fsm")],
        env={"COLUMNS": "300"},  # or the error box wraps the message
    )
    assert result.exit_code == 2
    assert "--save-model: directory" in result.output
    assert "does not exist" in result.output
