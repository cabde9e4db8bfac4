"""Scale-out: validation metrics with 2 DDP processes (gloo, CPU) equal those of one process."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_dir_of, run_script, train_overrides


def _validate(tmp, data_dir, checkpoint, *extra):
    tmp.mkdir()
    overrides = train_overrides(
        tmp,
        data_dir,
        "stage=validate",
        f"ckpt_path={checkpoint}",
        # A larger val split with an odd number of cases: a padding sampler would count one
        # case twice on 2 processes and shift the metric.
        "data.val_fraction=0.35",
        "trainer.accelerator=cpu",
        *extra,
    )
    result = run_script("train", *overrides, tmp=tmp)
    return json.loads((run_dir_of(result) / "validate.json").read_text())


@pytest.mark.slow
def test_validation_metric_does_not_depend_on_the_process_count(tmp_path, data_dir, cls_run):
    run_dir, _ = cls_run
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    one = _validate(tmp_path / "one", data_dir, checkpoint)
    two = _validate(tmp_path / "two", data_dir, checkpoint, "trainer=ddp", "trainer.devices=2")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["n_val_cases"] == two["n_val_cases"]
    assert one["n_val_cases"] % 2 == 1
    assert set(one["metrics"]) == set(two["metrics"])
    assert two["metrics"]["val/auroc"] == pytest.approx(one["metrics"]["val/auroc"], abs=1e-6)
    # The loss is a mean over cases: equal only when each case is counted exactly once.
    assert two["metrics"]["val/loss"] == pytest.approx(one["metrics"]["val/loss"], abs=1e-5)
