"""The packages are layered models < detector < api: no import runs back up the layers.

``models`` imports neither ``detector`` nor ``api``; ``detector`` imports ``api`` only
inside the functions that start the review service, never when a module is loaded. In
``detector``, only the dataflow (``dataflow.py`` and the ``flow`` package) imports
Bytewax: the scoring core, the replays and the local system run without it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(tree: ast.AST, *, in_functions: bool) -> Iterator[tuple[int, str]]:
    """Line and top-level package of each import, those inside functions only if asked."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            if in_functions:
                yield from _imports(node, in_functions=True)
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        yield from _imports(node, in_functions=in_functions)


def _violations(package: str, banned: set[str], *, in_functions: bool) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, imported in _imports(tree, in_functions=in_functions):
            if imported in banned:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize(
    ("package", "banned", "in_functions"),
    [("models", {"detector", "api"}, True), ("detector", {"api"}, False)],
)
def test_no_import_runs_back_up_the_layers(
    package: str, banned: set[str], in_functions: bool
) -> None:
    assert _violations(package, banned, in_functions=in_functions) == []


def test_the_check_sees_an_import_inside_a_function() -> None:
    tree = ast.parse("import os\n\ndef f():\n    from api.main import create_app\n")
    assert list(_imports(tree, in_functions=False)) == [(1, "os")]
    assert list(_imports(tree, in_functions=True)) == [(1, "os"), (4, "api")]


# The dataflow's own code: the only place in ``detector`` that may import Bytewax.
BYTEWAX_HOMES = ("detector/dataflow.py", "detector/flow/")


def test_only_the_dataflow_imports_bytewax() -> None:
    found = [
        line
        for line in _violations("detector", {"bytewax"}, in_functions=True)
        if not line.startswith(BYTEWAX_HOMES)
    ]
    assert found == []
