"""Hydra configs: every experiment composes and builds; wrong overrides fail before data is read."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from medimg.pipeline.build import build_augmentation, build_preprocessor, build_task
from medimg.pipeline.entry import CONFIG_DIR
from tests.conftest import ROOT, run_script, train_overrides

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment):
    cfg = _compose(f"experiment={experiment}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/x")
    task = build_task(cfg).eval()
    pre = build_preprocessor(cfg)
    build_augmentation(cfg)
    image = torch.zeros(1, 1, *pre.size)
    covariates = torch.zeros(1, len(cfg.data.covariates)) if cfg.data.covariates else None
    with torch.no_grad():
        out = task(image, covariates)
    assert out.shape[0] == 1 and out.shape[1] == cfg.task.num_classes


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epoch=3", "Key 'max_epoch' not in 'TrainerSchema'"),
        (
            "trainer.max_epochs=three",
            "Value 'three' of type 'str' could not be converted to Integer",
        ),
        ("data.batch_size=1.5", "could not be converted to Integer"),
        ("experiment=nope", "Could not find 'experiment/nope'"),
    ],
)
def test_wrong_override_fails_at_once_with_hydras_message(tmp_path, override, message):
    data_dir = tmp_path / "data"
    result = run_script(
        "train",
        f"paths.data_dir={data_dir}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        override,
        tmp=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not data_dir.exists()  # the data was never touched
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_multirun_over_two_learning_rates_gives_two_run_folders(tmp_path, data_dir):
    overrides = train_overrides(
        tmp_path, data_dir, "export.enabled=false", "logger=csv", "trainer.limit_train_batches=0.25"
    )
    result = run_script(
        "train", "--multirun", "optimizer.lr=0.001,0.0003", *overrides, tmp=tmp_path
    )
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("run_info.json"))
    assert len(runs) == 2
    lrs = sorted(
        float(__import__("yaml").safe_load((r / "config.yaml").read_text())["optimizer"]["lr"])
        for r in runs
    )
    assert lrs == [0.0003, 0.001]
    assert result.returncode == 0
