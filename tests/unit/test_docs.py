"""The README documents every setting the code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic.fields import FieldInfo

from detector.settings import GROUPS, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
# A default the code computes is said at the end of the field's description.
COMPUTED_DEFAULT = re.compile(r"^(?P<text>.*) \(default: (?P<default>[^)]*)\)\.$")


def configuration_rows(field_name: str, field: FieldInfo) -> str:
    """The README table row of one setting: variable, default, description."""
    description = field.description or ""
    default = field.get_default(call_default_factory=True)
    computed = COMPUTED_DEFAULT.match(description)
    if default is None and computed:
        shown = computed["default"]
        description = computed["text"] + "."
    elif default is None:
        shown = "none"
    elif isinstance(default, bool):
        shown = f"`{str(default).lower()}`"
    elif isinstance(default, dict | tuple | list):
        shown = f"`{json.dumps(default)}`"
    else:
        shown = f"`{default}`"
    return f"| `FRAUDSTREAM_{field_name.upper()}` | {shown} | {description} |"


def configuration_section() -> str:
    """The README's configuration tables, one per group of ``Settings``."""
    parts = []
    for group, kind in GROUPS.items():
        title = Settings.model_fields[group].description
        rows = [configuration_rows(name, field) for name, field in kind.model_fields.items()]
        parts.append(
            f"### {title}\n\n| variable | default | meaning |\n| --- | --- | --- |\n"
            + "\n".join(rows)
            + "\n"
        )
    return "\n".join(parts)


def test_the_readme_configuration_tables_are_the_settings() -> None:
    text = README.read_text()
    start = text.index("## Configuration\n")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    assert configuration_section() in section, (
        "README.md's configuration tables differ from detector/settings.py; regenerate "
        "them with `python -m tests.unit.test_docs`"
    )


def test_every_setting_has_a_description() -> None:
    assert all(
        field.description for kind in GROUPS.values() for field in kind.model_fields.values()
    )


def test_the_groups_are_the_settings_groups() -> None:
    assert list(GROUPS) == list(Settings.model_fields)
    assert all(Settings.model_fields[g].annotation is kind for g, kind in GROUPS.items())


def test_the_contract_examples_are_valid_records() -> None:
    from detector import contracts

    text = README.read_text()
    examples = re.findall(r"^### (\w+) \(`[^`]+`\)\n.*?```json\n(.*?)```", text, re.S | re.M)
    checked = set()
    for name, example in examples:
        model = getattr(contracts, name)
        model.model_validate_json(json.dumps(json.loads(example)))
        checked.add(name)
    assert {"Transaction", "Decision", "Alert", "Label", "DeadLetter", "Control"} <= checked


if __name__ == "__main__":
    print(configuration_section(), end="")
