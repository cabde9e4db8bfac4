"""Callback and trainer configs: early stopping beside the checkpoints, DDP trainer settings."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.resolvers import register_resolvers
from medimg.pipeline.schema import register_schemas


def _compose(tmp_path, *overrides: str, monitor_mode: str | None = None):
    register_schemas()
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}", *overrides],
        )
    if monitor_mode is not None:  # what a task config sets (regression: min)
        OmegaConf.set_struct(cfg, False)
        cfg.task.monitor_mode = monitor_mode
    return cfg


class _Scripted(L.LightningModule):
    """Logs a scripted validation metric under the task's monitor name, one value per epoch."""

    def __init__(self, monitor: str, values: list[float]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.monitor, self.values = monitor, values

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log(self.monitor, self.values[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_early_stopping_keeps_the_default_checkpoints(tmp_path):
    default = _compose(tmp_path).callbacks
    cfg = _compose(tmp_path, "callbacks=early_stopping").callbacks
    assert set(cfg) == set(default) | {"early_stopping"}
    for name in default:
        assert cfg[name] == default[name]


@pytest.mark.parametrize("monitor_mode", [None, "min"])
def test_early_stopping_stops_when_the_metric_worsens_in_the_tasks_direction(
    tmp_path, monitor_mode
):
    cfg = _compose(tmp_path, "callbacks=early_stopping", monitor_mode=monitor_mode)
    callbacks = [instantiate(node) for node in cfg.callbacks.values()]
    stopper = next(c for c in callbacks if isinstance(c, EarlyStopping))
    best = next(c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor)
    mode = monitor_mode or "max"
    assert stopper.monitor == best.monitor == cfg.task.monitor
    assert stopper.mode == best.mode == mode
    patience = cfg.callbacks.early_stopping.patience
    epochs = patience + 10
    worse = [-float(e) if mode == "max" else float(e) for e in range(epochs)]
    data = DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Scripted(cfg.task.monitor, worse), data, data)
    assert stopper.stopped_epoch == patience  # epoch 0 was best, then `patience` worse ones
    assert best.best_model_score.item() == worse[0]


def test_ddp_trainer_config_builds_a_two_process_trainer(tmp_path):
    cfg = _compose(tmp_path, "trainer=ddp", "trainer.accelerator=cpu")
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer), logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 2 and trainer.num_nodes == 1
    # The datamodule shards every loader itself (medimg.data.sampling).
    assert trainer._accelerator_connector.use_distributed_sampler is False


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cpu", {"accelerator": "cpu", "strategy": "auto"}),
        ("gpu", {"accelerator": "gpu", "precision": "bf16-mixed"}),
        ("ddp", {"strategy": "ddp", "devices": 2, "use_distributed_sampler": False}),
        ("ddp_gpu", {"strategy": "ddp", "accelerator": "gpu", "sync_batchnorm": True}),
    ],
)
def test_trainer_configs_compose(tmp_path, name, expected):
    trainer = _compose(tmp_path, f"trainer={name}").trainer
    assert {k: trainer[k] for k in expected} == expected
    assert trainer.max_epochs == _compose(tmp_path).trainer.max_epochs  # defaults still apply
