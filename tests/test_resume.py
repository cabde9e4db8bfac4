"""Resuming from last.ckpt continues at the saved epoch and matches an uninterrupted run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.conftest import run_dir_of, run_script, train_overrides

pytestmark = pytest.mark.slow


def _weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return state["epoch"], state["state_dict"]


def test_resume_two_plus_two_equals_four(tmp_path, data_dir):
    common = (
        "augmentation=none",
        "export.enabled=false",
        "logger=csv",
        "net=unet",
        "task=segmentation",
        "trainer.limit_train_batches=0.5",
        "scheduler.T_max=4",
    )

    def train(*extra):
        return run_dir_of(
            run_script("train", *train_overrides(tmp_path, data_dir, *common, *extra), tmp=tmp_path)
        )

    first = train("trainer.max_epochs=2")
    resumed = train("trainer.max_epochs=4", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    straight = train("trainer.max_epochs=4")
    assert resumed != first  # a new run folder

    log = pd.read_csv(resumed / "logs" / "metrics.csv")
    assert sorted(log["epoch"].dropna().unique().astype(int)) == [
        2,
        3,
    ]  # continued at the saved epoch

    epoch_a, state_a = _weights(resumed)
    epoch_b, state_b = _weights(straight)
    assert epoch_a == epoch_b == 3
    for name, tensor in state_b.items():
        assert torch.allclose(state_a[name].float(), tensor.float(), atol=1e-5), name
    val_a = log.dropna(subset=["val/dice"])["val/dice"].iloc[-1]
    log_b = pd.read_csv(straight / "logs" / "metrics.csv")
    assert val_a == pytest.approx(log_b.dropna(subset=["val/dice"])["val/dice"].iloc[-1], abs=1e-5)
