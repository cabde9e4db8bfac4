"""Image classification: binary (one logit), multi-class (softmax) or multi-label (K sigmoids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC, MulticlassAUROC, MultilabelAUROC

from medimg.data import keys
from medimg.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory
from medimg.tasks.losses import ClassificationLoss


class ClassificationTask(BaseTask):
    """Classification of whole images; logs ``{stage}/auroc`` each validation/test epoch.

    Multi-label tasks also log ``{stage}/auroc_<label name>`` per label; their ``{stage}/auroc``
    is the macro average over labels whose AUROC is defined.

    Args:
        net: network with ``num_classes`` outputs (1 for binary).
        optimizer: optimiser factory.
        scheduler: optional scheduler factory.
        num_classes: 1 for binary (sigmoid), >= 2 for multi-class (softmax), or the number of
            labels when ``multilabel``.
        label_names: names of the classes (of the labels when ``multilabel``), for the model card.
        monitor: metric a plateau scheduler watches.
        multilabel: ``num_classes`` independent 0/1 labels per image (sigmoid + BCE).
        loss: ``{name: "ce" | "focal", class_weights: list | None, gamma: float}``; None is
            plain (binary) cross-entropy. See :class:`medimg.tasks.losses.ClassificationLoss`.
        compile: run the network through ``torch.compile``.
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
        multilabel: bool = False,
        loss: Mapping[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, compile)
        if num_classes < 1:
            raise ValueError(f"task.num_classes must be >= 1, got {num_classes}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        self.multilabel = bool(multilabel)
        if self.multilabel:
            names = list(label_names or [f"label{i}" for i in range(num_classes)])
            if len(names) != num_classes:
                raise ValueError(
                    f"task.label_names must name each of the {num_classes} labels of a multi-label "
                    f"task, got {len(names)}: {names}"
                )
            self.label_names = names
        else:
            self.label_names = list(label_names or ["negative", "positive"])
        self.criterion = ClassificationLoss(loss, num_classes, self.multilabel)
        self.auroc = nn.ModuleDict({stage: self._make_auroc() for stage in ("val", "test")})

    def _make_auroc(self) -> nn.Module:
        if self.multilabel:
            # Per label; the macro value is their mean over defined labels, as torchmetrics does.
            return MultilabelAUROC(self.num_classes, average="none")
        if self.num_classes == 1:
            return BinaryAUROC()
        return MulticlassAUROC(self.num_classes)

    def target(self, batch: dict) -> Tensor:
        return batch[keys.LABEL]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.criterion(logits, target)

    def activate(self, logits: Tensor) -> Tensor:
        if self.num_classes == 1 and not self.multilabel:
            return torch.sigmoid(logits.reshape(-1))
        if self.multilabel:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        self.auroc[stage].update(probs, target.long())

    def log_metrics(self, stage: str) -> None:
        metric = self.auroc[stage]
        # AUROC is undefined until both classes were seen (e.g. Lightning's sanity check).
        if metric.update_count > 0:
            value = metric.compute()  # gathers every process's predictions under DDP
            if self.multilabel:
                value = value.reshape(-1)  # torchmetrics squeezes a one-label result
                defined = ~torch.isnan(value)
                if defined.any():
                    self.log(f"{stage}/auroc", value[defined].mean(), prog_bar=True)
                for name, per_label in zip(self.label_names, value, strict=True):
                    if not torch.isnan(per_label):
                        self.log(f"{stage}/auroc_{name}", per_label)
            else:
                self.log(f"{stage}/auroc", value, prog_bar=True)
        metric.reset()
