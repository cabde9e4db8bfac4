"""The small base every task shares: optimisation, the shared step and prediction output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from medimg.data import keys

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class BaseTask(L.LightningModule):
    """Wraps an injected network with a loss, an optimiser and stage metrics.

    Subclasses implement :meth:`target`, :meth:`loss`, :meth:`activate` and the metric hooks.

    Args:
        net: the network (built from config by the pipeline).
        optimizer: ``functools.partial`` of a torch optimiser, taking the parameters.
        scheduler: optional ``functools.partial`` of a learning-rate scheduler.
        monitor: metric a plateau scheduler watches (e.g. ``val/loss``).
    """

    kind: str = ""
    monitor_default: str = "val/loss"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor or self.monitor_default

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }

    def target(self, batch: dict) -> Tensor:
        """The training target of a batch."""
        raise NotImplementedError

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Training loss."""
        raise NotImplementedError

    def activate(self, logits: Tensor) -> Tensor:
        """Network output → probabilities (the same function the export applies)."""
        raise NotImplementedError

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        """Accumulate the epoch metrics of ``stage``."""

    def log_metrics(self, stage: str) -> None:
        """Compute, log and reset the epoch metrics of ``stage``."""

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        logits = self(batch[keys.IMAGE])
        target = self.target(batch)
        loss = self.loss(logits, target)
        batch_size = batch[keys.IMAGE].shape[0]
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        if stage != "train":
            self.update_metrics(stage, self.activate(logits.detach()), target)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """Probabilities per case, with the case ids and whatever target the batch carries."""
        out: dict[str, Any] = {
            keys.CASE_ID: list(batch[keys.CASE_ID]),
            "prob": self.activate(self(batch[keys.IMAGE])).float().cpu(),
        }
        for key in (keys.LABEL, keys.MASK):
            if key in batch:
                out[key] = batch[key].cpu()
        return out
