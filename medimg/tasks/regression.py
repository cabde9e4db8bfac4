"""Regression of one continuous target per image, trained on the standardised target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from medimg.data import keys
from medimg.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory
from medimg.tasks.losses import RegressionLoss


class RegressionTask(BaseTask):
    """One value per image; logs ``{stage}/mae`` and ``{stage}/rmse`` in target units.

    The network predicts ``(y - target_mean) / target_std``; the two buffers are fitted on the
    training split by :meth:`prepare_from_training` and saved in checkpoints, so a reloaded or
    exported model maps its output back with ``output * target_std + target_mean``.

    Args:
        net: network with one output.
        optimizer: optimiser factory.
        scheduler: optional scheduler factory.
        num_classes: must be 1 (kept so the shared task schema and model card read alike).
        label_names: the target's name, e.g. ``[lesion_volume_ml]``.
        monitor: metric checkpoints and plateau schedules watch (``val/mae``: lower is better).
        loss: ``{name: "mse" | "l1" | "huber", delta: float}``; None is MSE.
        compile: run the network through ``torch.compile``.
    """

    kind = "regression"
    monitor_default = "val/mae"
    output_key = "pred"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = 1,
        label_names: list[str] | None = None,
        monitor: str | None = None,
        loss: Mapping[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, compile)
        if num_classes != 1:
            raise ValueError(f"task.num_classes must be 1 for regression, got {num_classes}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = 1
        self.label_names = list(label_names or ["target"])
        if len(self.label_names) != 1:
            raise ValueError(f"task.label_names must name the one target, got {self.label_names}")
        self.criterion = RegressionLoss(loss)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.mae = nn.ModuleDict({s: MeanAbsoluteError() for s in ("val", "test")})
        self.rmse = nn.ModuleDict({s: MeanSquaredError(squared=False) for s in ("val", "test")})

    def prepare_from_training(self, labels: Tensor | None, covariates: Tensor | None) -> None:
        """Fit ``target_mean``/``target_std`` on the training targets, then the base's statistics.

        Raises:
            ValueError: without labels, or with fewer than two finite ones.
        """
        if labels is None:
            raise ValueError("regression needs the training split's targets to scale them")
        values = torch.as_tensor(labels, dtype=torch.float64).reshape(-1)
        values = values[torch.isfinite(values)]
        if values.numel() < 2:
            raise ValueError(
                f"regression needs at least 2 finite training targets, got {values.numel()}"
            )
        std = values.std()
        # A constant target has no spread to divide by; keep the unit scale then.
        self.target_mean.fill_(float(values.mean()))
        self.target_std.fill_(float(std) if std > 0 else 1.0)
        super().prepare_from_training(labels, covariates)

    def needs_preparation(self) -> bool:
        return True

    def target(self, batch: dict) -> Tensor:
        return batch[keys.LABEL].float().reshape(-1)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        scaled = (target - self.target_mean) / self.target_std
        return self.criterion(logits.reshape(-1), scaled)

    def activate(self, logits: Tensor) -> Tensor:
        """Network output → prediction in target units."""
        return logits.reshape(-1) * self.target_std + self.target_mean

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        self.mae[stage].update(probs, target)
        self.rmse[stage].update(probs, target)

    def log_metrics(self, stage: str) -> None:
        for name, metric in (("mae", self.mae[stage]), ("rmse", self.rmse[stage])):
            if metric.update_count > 0:
                self.log(f"{stage}/{name}", metric.compute(), prog_bar=name == "mae")
            metric.reset()
