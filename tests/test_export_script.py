"""scripts/export.py: export a finished run again, in another format, with the same parity."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


def test_export_a_run_as_torch_export_program(cls_run, tmp_path):
    from medimg.export import load_model

    run_dir, _ = cls_run
    result = run_script("export", str(run_dir), "--format", "torch_export", tmp=tmp_path)
    path = run_dir / "export-torch_export" / "model.pt2"
    assert result.stdout.strip().splitlines()[-1] == str(path)
    card = load_model(path).card
    trained = json.loads((run_dir / "export" / "model_card.json").read_text())
    assert card["weights_sha256"] == trained["weights_sha256"]  # the same best checkpoint
    assert card["parity"]["passed"] and card["parity"]["max_abs_diff"] <= 1e-4
    assert card["export"]["format"] == "torch_export" and card["export"]["input_shape"]
    assert (
        card["validation"]["external"]["external"]["auroc"]
        == trained["metrics"]["external"]["auroc"]
    )


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = run_script("export", str(tmp_path), tmp=tmp_path, check=False)
    assert result.returncode == 2
    assert f"{tmp_path}: not a medimg run directory (no config.yaml)" in result.stderr
