"""scripts/evaluate.py: rebuilds the model from the run's own config, or uses the exported file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


def test_evaluate_run_reproduces_the_training_runs_external_metrics(cls_run, manifests, tmp_path):
    run_dir, _ = cls_run
    result = run_script(
        "evaluate",
        f"run_dir={run_dir}",
        f"manifest={manifests['external']}",
        "name=site_b",
        tmp=tmp_path,
    )
    out_dir = run_dir / "eval" / "site_b"
    assert result.stdout.strip().splitlines()[-1] == str(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())["site_b"]
    trained = json.loads((run_dir / "metrics.json").read_text())["external"]
    assert metrics["auroc"] == pytest.approx(trained["auroc"], abs=1e-9)
    ours = pd.read_csv(out_dir / "predictions.csv").set_index("case_id")["prob"]
    theirs = pd.read_csv(run_dir / "predictions" / "external.csv").set_index("case_id")["prob"]
    assert (ours - theirs.loc[ours.index]).abs().max() < 1e-6


def test_evaluate_exported_model_matches_checkpoint(cls_run, manifests, tmp_path):
    run_dir, _ = cls_run
    out = tmp_path / "exported_eval"
    run_script(
        "evaluate",
        f"model={run_dir / 'export' / 'model.ts'}",
        f"manifest={manifests['external']}",
        f"output_dir={out}",
        tmp=tmp_path,
    )
    ours = pd.read_csv(out / "predictions.csv").set_index("case_id")["prob"]
    theirs = pd.read_csv(run_dir / "predictions" / "external.csv").set_index("case_id")["prob"]
    assert (ours - theirs.loc[ours.index]).abs().max() <= 1e-4


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path, manifests):
    result = run_script(
        "evaluate",
        f"run_dir={tmp_path}",
        f"manifest={manifests['external']}",
        tmp=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert f"{tmp_path}: not a medimg run directory (no config.yaml)" in result.stderr
