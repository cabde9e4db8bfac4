"""scripts/evaluate.py: a run rebuilt from its own config (also one trained before the evaluation
settings existed) or an exported model, on the run's test split and external manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from tests.conftest import run_script

pytestmark = pytest.mark.slow

# The keys of the first medimg run configs (schema of the first commit): every key added since
# (evaluation, data.label_column, stage, init, reference, task.monitor_mode, ...) is stripped.
LEGACY_TOP = {
    "data",
    "preprocess",
    "augmentation",
    "net",
    "task",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "export",
    "experiment_name",
    "seed",
    "ckpt_path",
}
LEGACY = {
    "data": {"source", "batch_size", "num_workers", "cache", "val_fraction", "test_fraction"},
    "preprocess": {"spacing", "size", "window", "fill_value"},
    "augmentation": {"name", "flip_prob", "noise_std", "intensity_prob"},
    "task": {"_target_", "num_classes", "label_names", "monitor"},
    "trainer": {
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "max_epochs",
        "deterministic",
        "log_every_n_steps",
        "num_sanity_val_steps",
        "fast_dev_run",
        "limit_train_batches",
        "limit_val_batches",
        "gradient_clip_val",
        "accumulate_grad_batches",
        "check_val_every_n_epoch",
        "enable_progress_bar",
    },
    "export": {"enabled", "parity_atol"},
    "paths": {"root_dir", "data_dir", "runs_dir", "output_dir"},
}


def legacy_copy(run_dir: Path, target: Path) -> Path:
    """A copy of a run (config, splits, best checkpoint) whose config has only legacy keys."""
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "splits.csv", target / "splits.csv")
    shutil.copy(run_dir / "checkpoints" / "best.ckpt", target / "checkpoints" / "best.ckpt")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    old = {k: v for k, v in config.items() if k in LEGACY_TOP}
    for section, keep in LEGACY.items():
        old[section] = {k: v for k, v in config[section].items() if k in keep}
    (target / "config.yaml").write_text(yaml.safe_dump(old))
    return target


def read(path: Path) -> pd.Series:
    return pd.read_csv(path, dtype={"case_id": str}).set_index("case_id")["prob"]


def test_evaluate_a_run_trained_before_the_evaluation_settings(cls_run, manifests, tmp_path):
    run_dir, _ = cls_run
    old = legacy_copy(run_dir, tmp_path / "old_run")
    assert "evaluation" not in (old / "config.yaml").read_text()
    result = run_script(
        "evaluate",
        f"run_dir={old}",
        f"+external={manifests['external']}",
        "evaluation.n_resamples=200",
        tmp=tmp_path,
    )
    eval_dir = old / "eval"
    assert result.stdout.strip().splitlines()[-1] == str(eval_dir)
    external = manifests["external"].parent.name  # a manifest.csv is named after its folder
    for name in ("test", external):
        for file in ("predictions.csv", "metrics.json", "report.html", "roc.png", "subgroups.png"):
            assert (eval_dir / name / file).is_file(), (name, file)
    # The run's own config rebuilt the model and preprocessing: training's predictions again.
    for name, trained in (("test", "test"), (external, "external")):
        ours, theirs = (
            read(eval_dir / name / "predictions.csv"),
            read(run_dir / "predictions" / f"{trained}.csv"),
        )
        assert sorted(ours.index) == sorted(theirs.index)
        assert (ours - theirs.loc[ours.index]).abs().max() < 1e-6
    metrics = json.loads((eval_dir / external / "metrics.json").read_text())
    assert metrics["settings"]["n_resamples"] == 200  # this command's settings, not the run's
    table = pd.read_csv(eval_dir / external / "predictions.csv")
    auroc = metrics["metrics"]["auroc"]
    assert auroc["value"] == pytest.approx(roc_auc_score(table["label"], table["prob"]), abs=1e-12)
    test_table = pd.read_csv(eval_dir / "test" / "predictions.csv")
    drop = metrics["comparisons"][external]
    assert drop["against"] == "test" and drop["design"] == "unpaired"
    assert drop["metrics"]["auroc"]["difference"] == pytest.approx(
        auroc["value"] - roc_auc_score(test_table["label"], test_table["prob"]), abs=1e-12
    )
    trained = json.loads((run_dir / "eval" / "results.json").read_text())["operating_point"]
    assert metrics["operating_point"]["chosen_on"] == "val"
    assert metrics["operating_point"]["thresholds"]["positive"] == pytest.approx(
        trained["thresholds"]["positive"], abs=1e-6
    )


def test_evaluate_exported_model_matches_checkpoint(cls_run, manifests, tmp_path):
    run_dir, _ = cls_run
    out = tmp_path / "exported_eval"
    run_script(
        "evaluate",
        f"model={run_dir / 'export' / 'model.ts'}",
        f"+external.site_b={manifests['external']}",
        "internal=false",
        "evaluation.n_resamples=100",
        f"output_dir={out}",
        tmp=tmp_path,
    )
    ours = read(out / "site_b" / "predictions.csv")
    theirs = read(run_dir / "predictions" / "external.csv")
    assert (ours - theirs.loc[ours.index]).abs().max() <= 1e-4
    results = json.loads((out / "results.json").read_text())
    assert list(results["sets"]) == ["site_b"] and (out / "site_b" / "report.html").is_file()
    # Inside its run folder, the exported model's operating point is chosen on the run's val split.
    trained = json.loads((run_dir / "eval" / "results.json").read_text())["operating_point"]
    assert results["operating_point"]["chosen_on"] == "val"
    assert results["operating_point"]["thresholds"]["positive"] == pytest.approx(
        trained["thresholds"]["positive"], abs=1e-4
    )


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path, manifests):
    result = run_script(
        "evaluate",
        f"run_dir={tmp_path}",
        f"+external={manifests['external']}",
        tmp=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert f"{tmp_path}: not a medimg run directory (no config.yaml)" in result.stderr
