"""Every command answers --help, and the commands that need no broker work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from detector.cli import app

runner = CliRunner()


def command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        for sub in getattr(cmd, "commands", {}):
            paths.append([name, sub])
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_commands_are_all_there() -> None:
    names = {" ".join(p) for p in command_paths()}
    assert {
        "up",
        "detect",
        "api",
        "simulate",
        "replay",
        "topics create",
        "broker start",
        "broker stop",
        "broker status",
    } <= names


def test_simulate_writes_jsonl_with_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    result = runner.invoke(
        app, ["simulate", "--out", str(out), "--limit", "500", "--seed", "3", "--customers", "200"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 500
    assert {"transaction_id", "timestamp", "card_id", "terminal_id", "amount"} <= set(rows[0])
    assert "is_fraud" in rows[0]


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0
    assert "Invalid value" in result.output and "nope.csv" in result.output


def test_a_kafka_config_that_weakens_producers_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_EXTRA_CONFIG", '{"acks": "1"}')
    result = runner.invoke(app, ["detect"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "FRAUDSTREAM_KAFKA_EXTRA_CONFIG" in line and "acks=1" in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        (
            "FRAUDSTREAM_REVIEW_SHARE",
            "abc",
            "FRAUDSTREAM_REVIEW_SHARE='abc' is invalid: Input should",
        ),
        ("FRAUDSTREAM_SCORE_FALLBACK", "block", "FRAUDSTREAM_SCORE_FALLBACK='block' is invalid"),
        ("FRAUDSTREAM_API_PORT", "-1", "FRAUDSTREAM_API_PORT='-1' is invalid"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["detect"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("fraudstream: ") and words in line, line
    assert "Traceback" not in result.output


def test_a_bad_secret_setting_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_EXTRA_CONFIG", '{"sasl.password": "hunter2"')
    result = runner.invoke(app, ["detect"])
    assert result.exit_code == 2
    assert "FRAUDSTREAM_KAFKA_EXTRA_CONFIG" in result.output
    assert "hunter2" not in result.output
