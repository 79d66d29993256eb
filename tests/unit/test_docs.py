"""The README documents every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from detector.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    text = README.read_text()
    missing = [
        name for name in Settings.model_fields if f"`FRAUDSTREAM_{name.upper()}`" not in text
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_the_contract_examples_are_valid_records() -> None:
    import json
    import re

    from detector import contracts

    text = README.read_text()
    examples = re.findall(r"^### (\w+) \(`[^`]+`\)\n.*?```json\n(.*?)```", text, re.S | re.M)
    checked = set()
    for name, example in examples:
        model = getattr(contracts, name)
        model.model_validate_json(json.dumps(json.loads(example)))
        checked.add(name)
    assert {"Transaction", "Decision", "Alert", "Label", "DeadLetter", "Control"} <= checked
