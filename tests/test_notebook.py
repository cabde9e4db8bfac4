"""notebooks/quickstart.ipynb runs top to bottom (on tiny data)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, TINY, script_env

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path, data_dir, monkeypatch):
    overrides = [
        f"paths.data_dir={data_dir}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        "trainer.max_epochs=1",
        "logger=csv",
        *TINY,
    ]
    for key, value in script_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEDIMG_QUICKSTART_ARGS", " ".join(overrides))
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "exported model" in outputs and "run folder:" in outputs
    assert os.path.isdir(tmp_path / "runs")
