"""Image classification: binary (one logit) or multi-class (one logit per class)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC, MulticlassAUROC

from medimg.data import keys
from medimg.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory


class ClassificationTask(BaseTask):
    """Classification of whole images; logs ``{stage}/auroc`` each validation/test epoch.

    Args:
        net: network with ``num_classes`` outputs (1 for binary).
        optimizer: optimiser factory.
        scheduler: optional scheduler factory.
        num_classes: 1 for binary (sigmoid), >= 2 for multi-class (softmax).
        label_names: names of the classes, stored in the model card.
    """

    kind = "classification"
    monitor_default = "val/auroc"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = 1,
        label_names: list[str] | None = None,
        monitor: str | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor)
        if num_classes < 1:
            raise ValueError(f"task.num_classes must be >= 1, got {num_classes}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        self.label_names = list(label_names or ["negative", "positive"])
        make = (
            (lambda: BinaryAUROC()) if num_classes == 1 else (lambda: MulticlassAUROC(num_classes))
        )
        self.auroc = nn.ModuleDict({stage: make() for stage in ("val", "test")})

    def target(self, batch: dict) -> Tensor:
        return batch[keys.LABEL]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.num_classes == 1:
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), target.float())
        return F.cross_entropy(logits, target.long())

    def activate(self, logits: Tensor) -> Tensor:
        if self.num_classes == 1:
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=1)

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        self.auroc[stage].update(probs, target.long())

    def log_metrics(self, stage: str) -> None:
        metric = self.auroc[stage]
        # AUROC is undefined until both classes were seen (e.g. Lightning's sanity check).
        if metric.update_count > 0:
            self.log(f"{stage}/auroc", metric.compute(), prog_bar=True)
        metric.reset()
