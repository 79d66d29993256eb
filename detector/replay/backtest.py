"""Rule backtests: how many transactions of a dataset a rule would have hit, and how many
of those were fraud, before the rule goes live (``fraudstream evaluate --rules FILE``).

The rules run in shadow inside the same replay as ``evaluate`` (the same features, from
the same scoring core, labels arriving as the label policy says), so they see exactly
the values a live rule would, and the model's own figures are unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from detector.contracts import Control, Rule
from detector.expressions import ExpressionError, check_expression
from detector.items import Scored

AUTHOR = "backtest"


class RulesFileError(ValueError):
    """A rules file that cannot be read, or holds an invalid rule."""


def load_rules(path: Path) -> list[Rule]:
    """The rules of a YAML or JSON file: a list of rules, or ``{"rules": [...]}``; each
    with ``name``, ``expression`` and ``outcome`` (``mode``, ``note`` optional)."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RulesFileError(f"{path}: {error}") from None
    if isinstance(data, dict):
        data = data.get("rules")
    if not isinstance(data, list) or not data:
        raise RulesFileError(f"{path}: expected a list of rules (or a 'rules' key holding one)")
    now = datetime.now(UTC)
    rules: dict[str, Rule] = {}
    for i, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise RulesFileError(f"{path}: rule {i} is not a mapping")
        try:
            rule = Rule.model_validate(
                {"changed_by": AUTHOR, "changed_at": now, **item}, strict=False
            )
            check_expression(rule.expression)
        except (ValidationError, ExpressionError) as error:
            name = item.get("name", f"#{i}")
            raise RulesFileError(f"{path}: rule {name}: {error}") from None
        if rule.name in rules:
            raise RulesFileError(f"{path}: rule {rule.name} appears twice")
        rules[rule.name] = rule
    return list(rules.values())


def shadow_controls(rules: list[Rule]) -> list[Control]:
    """Controls that put ``rules`` in shadow: they count their hits and decide nothing."""
    return [
        Control(
            control_id=f"backtest-{rule.name}",
            action="put_rule",
            rule=rule.model_copy(update={"mode": "shadow"}),
            requested_by=AUTHOR,
            requested_at=rule.changed_at,
        )
        for rule in rules
    ]


@dataclass
class RuleResult:
    """A rule's hits over a replay, and the frauds among them."""

    rule: Rule
    hits: int = 0
    frauds: int = 0
    errors: int = 0

    @property
    def precision(self) -> float | None:
        return self.frauds / self.hits if self.hits else None


class Backtest:
    """Counts each rule's hits and the frauds among them, transaction by transaction."""

    def __init__(self, rules: list[Rule]) -> None:
        self.results = {rule.name: RuleResult(rule) for rule in rules}
        self.transactions = 0
        self.frauds = 0

    def observe(self, scored: Scored, is_fraud: bool) -> None:
        self.transactions += 1
        self.frauds += is_fraud
        if scored.policy is None:
            return
        for name, _mode in scored.policy.rule_hits:
            result = self.results.get(name)
            if result is not None:
                result.hits += 1
                result.frauds += is_fraud
        for name in scored.policy.rule_errors:
            if name in self.results:
                self.results[name].errors += 1

    def table(self) -> str:
        """Per rule: hits, their share of the transactions, frauds among them, precision,
        and the share of all frauds the rule would have caught."""
        head = (
            f"{'rule':<28} {'outcome':<7} {'hits':>9} {'of tx':>7} {'frauds':>7} "
            f"{'precision':>9} {'of frauds':>9} {'errors':>6}"
        )
        lines = [head, "-" * len(head)]
        for r in self.results.values():
            share = r.hits / self.transactions if self.transactions else 0.0
            caught = r.frauds / self.frauds if self.frauds else 0.0
            precision = f"{r.precision:.3f}" if r.precision is not None else "-"
            lines.append(
                f"{r.rule.name:<28} {r.rule.outcome:<7} {r.hits:>9,} {share:>7.2%} "
                f"{r.frauds:>7,} {precision:>9} {caught:>9.1%} {r.errors:>6,}"
            )
        lines.append(f"over {self.transactions:,} transactions, {self.frauds:,} of them fraud")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "frauds": self.frauds,
            "rules": [
                {
                    **json.loads(r.rule.model_dump_json(include={"name", "expression", "outcome"})),
                    "hits": r.hits,
                    "frauds": r.frauds,
                    "precision": r.precision,
                    "errors": r.errors,
                }
                for r in self.results.values()
            ],
        }
