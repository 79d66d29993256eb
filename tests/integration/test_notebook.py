"""The evaluation notebook runs end to end on a small slice (no Kafka broker needed).

It reads the Handbook's data from ``../shared/datasets/handbook/`` when it is there and
falls back to the project's simulator otherwise, so the test runs anywhere.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = NOTEBOOKS / "evaluation.ipynb"


@pytest.mark.slow
def test_evaluation_notebook_runs_on_a_small_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    # One test week right after the first one of data: the replay stops on 2018-04-15,
    # about 140,000 transactions; the limit is only a safety net.
    monkeypatch.setenv("FRAUDSTREAM_NB_TEST_WEEKS", "2018-04-08")
    monkeypatch.setenv("FRAUDSTREAM_NB_LIMIT", "200000")
    monkeypatch.delenv("FRAUDSTREAM_NB_DATASET", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )

    client.execute()  # raises CellExecutionError if a cell fails

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 4
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "week start" in text  # the weekly table of detector.replay.handbook.format_table
    assert "labels learned" in text
