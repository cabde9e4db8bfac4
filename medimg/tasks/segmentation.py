"""Semantic segmentation with a MONAI loss and MONAI's Dice metric."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from torch import Tensor, nn

from medimg.data import keys
from medimg.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory


class SegmentationTask(BaseTask):
    """Voxel-wise segmentation; logs ``{stage}/dice`` (mean over foreground classes).

    Args:
        net: network with ``num_classes`` output channels (background included).
        optimizer: optimiser factory.
        scheduler: optional scheduler factory.
        num_classes: output channels including background (2 for binary).
        label_names: class names, background first.
    """

    kind = "segmentation"
    monitor_default = "val/dice"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = 2,
        label_names: list[str] | None = None,
        monitor: str | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor)
        if num_classes < 2:
            raise ValueError(
                f"task.num_classes must be >= 2 (background included), got {num_classes}"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        self.label_names = list(label_names or ["background", "lesion"])
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)
        # ignore_empty: a case without foreground in the reference does not count towards Dice.
        self.dice = {
            stage: DiceMetric(include_background=False, ignore_empty=True)
            for stage in ("val", "test")
        }

    def target(self, batch: dict) -> Tensor:
        return batch[keys.MASK]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.criterion(logits, target)

    def activate(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1)

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        pred = nn.functional.one_hot(probs.argmax(1), self.num_classes).movedim(-1, 1)
        ref = nn.functional.one_hot(target[:, 0].long(), self.num_classes).movedim(-1, 1)
        self.dice[stage](pred, ref)

    def log_metrics(self, stage: str) -> None:
        metric = self.dice[stage]
        if len(metric.get_buffer() if metric.get_buffer() is not None else []) > 0:
            value = metric.aggregate().item()
            if value == value:  # NaN when no case had foreground
                self.log(f"{stage}/dice", value, prog_bar=True, sync_dist=True)
        metric.reset()
