"""Rule backtests: rules files, hits and the frauds among them, through the evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from detector.cli import app
from detector.replay.backtest import Backtest, RulesFileError, load_rules, shadow_controls
from detector.replay.evaluation import LabelPolicy, evaluate
from tests.unit.test_evaluation import at, rec

RULES = """
rules:
  - name: big
    expression: amount >= 100.0
    outcome: block
  - name: card-b
    expression: card_id == 'B'
    outcome: review
    mode: active
"""


def test_a_backtest_counts_each_rules_hits_and_the_frauds_among_them(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    backtest = Backtest(load_rules(path))
    records = [
        rec(f"t{i}", "A" if i % 2 else "B", at(1, i / 10), fraud=i % 3 == 0) for i in range(30)
    ]
    for i in (4, 9, 12):  # three big ones: one fraud (12), two not
        records[i] = rec(f"t{i}", records[i].transaction.card_id, at(1, i / 10), fraud=i == 12)
        records[i] = records[i].__class__(
            records[i].transaction.model_copy(update={"amount": 150.0}), i == 12
        )
    result = evaluate(
        records,
        policy=LabelPolicy(enabled=False),
        test_weeks=[],
        controls=shadow_controls([r.rule for r in backtest.results.values()]),
        observe=backtest.observe,
    )
    assert backtest.transactions == 30
    frauds = [r.is_fraud for r in records]
    assert backtest.frauds == sum(frauds)
    big, card_b = backtest.results["big"], backtest.results["card-b"]
    assert (big.hits, big.frauds) == (3, 1)
    b_rows = [r for r in records if r.transaction.card_id == "B"]
    assert (card_b.hits, card_b.frauds) == (len(b_rows), sum(bool(r.is_fraud) for r in b_rows))
    # In shadow: the model's decisions are its own.
    assert sum(result.decisions.values()) == 30
    table = backtest.table()
    assert table.splitlines()[2].split()[:5] == ["big", "block", "3", "10.00%", "1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []", "expected a list of rules"),
        ("- {name: x, expression: 'amount >', outcome: block}", "(?s)rule x: .*Syntax error"),
        ("- {name: x, expression: 'amout > 1.0', outcome: block}", "unknown variable amout"),
        ("- {name: x, expression: 'amount > 1.0', outcome: maybe}", "(?s)rule x: .*outcome"),
        ("- {name: x, expression: 'amount > 1.0', outcome: block}\n" * 2, "appears twice"),
        ("{", "rules.yaml"),
    ],
)
def test_a_bad_rules_file_is_refused_with_its_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesFileError, match=message):
        load_rules(path)


def test_the_command_refuses_a_bad_rules_file_before_replaying(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('[{"name": "x", "expression": "amount >", "outcome": "block"}]')
    data = tmp_path / "data.csv"
    data.write_text("transaction_id,timestamp,card_id,terminal_id,amount,is_fraud\n")
    result = CliRunner().invoke(app, ["evaluate", str(data), "--rules", str(rules)])
    assert result.exit_code == 2
    assert "Invalid value for --rules" in result.output and "Syntax" in result.output
