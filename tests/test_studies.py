"""Every study is a config away: each experiment trains, evaluates and exports (with parity)
end to end with fast_dev_run on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import ROOT, run_dir_of, run_script, train_overrides

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
# Tiny versions of each built-in dataset (the 2D one is a separate generator).
TINY_DATA = {
    "synthetic_ct": ("data.source.n_internal=24", "data.source.n_external=8"),
    "synthetic_dx": ("data.source.n_internal=24", "data.source.n_external=8"),
}
DX_EXPERIMENTS = {"cls2d", "multilabel2d", "seg2d"}


def _fast_dev_run(experiment: str, tmp, data_dir, *extra: str):
    dataset = "synthetic_dx" if experiment in DX_EXPERIMENTS else "synthetic_ct"
    result = run_script(
        "train",
        f"experiment={experiment}",
        f"paths.data_dir={data_dir}",
        f"paths.runs_dir={tmp / 'runs'}",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "data.batch_size=2",
        "logger=csv",
        *TINY_DATA[dataset],
        *extra,
        tmp=tmp,
    )
    return run_dir_of(result)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_fast_dev_run(experiment, tmp_path, data_dir):
    run_dir = _fast_dev_run(experiment, tmp_path, data_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The exported model reproduced the framework's output on every raw test case, in a process
    # that could not import medimg or MONAI (the pipeline refuses to export otherwise).
    card = json.loads((run_dir / "export" / "model_card.json").read_text())
    assert card["parity"]["passed"] is True
    assert card["parity"]["n_cases"] == metrics["test"]["n"]
    assert card["parity"]["framework_modules_loaded"] == []
    assert metrics["test"]["n"] > 0
    assert "external" in metrics
    if experiment == "cls3d_clinical":
        # Beside the fusion model: a covariates-only model and the image-only network.
        references = metrics["references"]
        assert 0.0 <= references["covariates_only"]["test"]["auroc"] <= 1.0
        assert references["image_only"]["test"]["n"] == metrics["test"]["n"]
        # Two-stage: the image-only network was trained first and saved for the fusion encoder;
        # the fusion model is compared with both references on the same cases.
        assert (run_dir / "reference_image_only" / "image_net.pt").is_file()
        # Both references' predictions are kept for the paired comparison (tests/
        # test_fusion_two_stage.py); sets with fewer than two cases of a class, as in this tiny
        # data, are left out of it.
        for name in ("image_only", "covariates_only"):
            assert (run_dir / f"reference_{name}" / "predictions" / "test.csv").is_file()
        compared = references.get("comparison", {})
        assert set(compared) <= {"image_only", "covariates_only"}
        for by_set in compared.values():
            for name, result in by_set.items():
                assert result["n"] == metrics[name]["n"]
                assert result["ci_low"] <= result["auroc_difference"] <= result["ci_high"]
    if experiment == "reg3d":
        assert {"mae", "rmse"} <= set(metrics["test"])


@pytest.mark.slow
def test_network_starts_from_a_users_weight_file_with_a_frozen_encoder(tmp_path, data_dir, cls_run):
    run_dir, _ = cls_run
    weights = run_dir / "checkpoints" / "best.ckpt"
    overrides = train_overrides(
        tmp_path,
        data_dir,
        "export.enabled=false",
        "logger=csv",
        "trainer.limit_train_batches=2",
        f"init.weights={weights}",
        "init.freeze_encoder=true",
    )
    new_run = run_dir_of(run_script("train", *overrides, tmp=tmp_path))
    last = new_run / "checkpoints" / "last.ckpt"
    before = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    # Weights and batch-norm running statistics of the encoder stay as loaded.
    kept = (".weight", ".running_mean", ".running_var")
    encoder = [k for k in before if k.startswith("net.features.") and k.endswith(kept)]
    head = [k for k in before if k.startswith("net.class_layers.") and k.endswith(".weight")]
    assert head and any(k.endswith(".running_mean") for k in encoder)
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in head)
