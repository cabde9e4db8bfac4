"""Loss functions chosen by ``task.loss``: a small dict that names a torch or MONAI loss.

Shapes follow the batch contract: classification logits are ``(B, 1)`` or ``(B, K)`` with targets
``(B,)`` (binary 0/1 or class index) or ``(B, K)`` (multi-label 0/1); segmentation logits are
``(B, C, *spatial)`` with a ``(B, 1, *spatial)`` label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss
from torch import Tensor, nn

CLASSIFICATION_LOSSES = ("ce", "focal")
SEGMENTATION_LOSSES = ("dicece", "dice", "dicefocal")
REGRESSION_LOSSES = ("mse", "l1", "huber")


def _options(config: Mapping[str, Any] | None, names: Sequence[str], allowed: set[str]) -> dict:
    """``config`` checked against the loss names and keys a task accepts."""
    options = dict(config or {})
    options.setdefault("name", names[0])
    if options["name"] not in names:
        raise ValueError(f"task.loss.name must be one of {list(names)}, got {options['name']!r}")
    unknown = set(options) - allowed - {"name"}
    if unknown:
        raise ValueError(
            f"task.loss has unknown keys {sorted(unknown)} for loss {options['name']!r}; "
            f"accepted: {sorted(allowed)}"
        )
    gamma = float(options.get("gamma", 2.0))
    if gamma < 0:
        raise ValueError(f"task.loss.gamma must be >= 0, got {gamma}")
    options["gamma"] = gamma
    return options


def _weights(options: dict, expected: int, what: str) -> list[float] | None:
    """``task.loss.class_weights`` as floats, checked for length and sign."""
    weights = options.get("class_weights")
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != expected:
        raise ValueError(
            f"task.loss.class_weights must have {expected} values ({what}), got {len(weights)}"
        )
    if any(w < 0 for w in weights):
        raise ValueError(f"task.loss.class_weights must be >= 0, got {weights}")
    return weights


class ClassificationLoss(nn.Module):
    """Cross-entropy or focal loss for binary, multi-class or multi-label outputs.

    ``class_weights`` means, by mode: binary ``[negative, positive]`` (applied as a positive-class
    weight ``positive / negative``, like ``pos_weight``); multi-class one weight per class (scales
    each class's term); multi-label one positive weight per label (``pos_weight`` for BCE, per-label
    ``alpha`` on positives for MONAI's sigmoid focal loss, which is the same weighting).

    Args:
        config: ``{name: "ce" | "focal", class_weights: list | None, gamma: float}`` or None (ce).
        num_classes: 1 for binary, K for multi-class or multi-label.
        multilabel: K independent sigmoid outputs.
    """

    def __init__(
        self, config: Mapping[str, Any] | None, num_classes: int, multilabel: bool = False
    ) -> None:
        super().__init__()
        options = _options(config, CLASSIFICATION_LOSSES, {"class_weights", "gamma"})
        self.name = options["name"]
        self.mode = "multilabel" if multilabel else "binary" if num_classes == 1 else "multiclass"
        if self.mode == "binary":
            weights = _weights(options, 2, "[negative, positive]")
            if weights is not None and weights[0] == 0:
                raise ValueError("task.loss.class_weights: the negative-class weight must be > 0")
            positive = None if weights is None else [weights[1] / weights[0]]
        else:
            what = "one per label" if multilabel else "one per class"
            weights = _weights(options, num_classes, what)
            positive = weights
        if self.name == "focal":
            if self.mode == "multiclass":
                self.criterion = FocalLoss(
                    to_onehot_y=True, use_softmax=True, gamma=options["gamma"], weight=weights
                )
            else:
                # MONAI's sequence alpha weights positives only (negatives keep weight 1).
                self.criterion = FocalLoss(gamma=options["gamma"], alpha=positive)
        elif self.mode == "multiclass":
            weight = None if weights is None else torch.tensor(weights)
            self.criterion = nn.CrossEntropyLoss(weight=weight)
        else:
            pos_weight = None if positive is None else torch.tensor(positive)
            self.criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()  # the weights are float32; half-precision logits lose the tails
        if self.mode == "binary":
            return self.criterion(logits.reshape(-1, 1), target.float().reshape(-1, 1))
        if self.mode == "multilabel":
            return self.criterion(logits, target.float())
        if self.name == "focal":
            return self.criterion(logits, target.long().reshape(-1, 1))
        return self.criterion(logits, target.long())


def segmentation_loss(config: Mapping[str, Any] | None, num_classes: int) -> nn.Module:
    """A MONAI segmentation loss on logits and a label map (softmax, one-hot target inside).

    Args:
        config: ``{name: "dicece" | "dice" | "dicefocal", class_weights: list | None,
            gamma: float, include_background: bool}`` or None (DiceCE, as before).
            ``dicefocal`` is MONAI's DiceFocalLoss, whose focal term is the sigmoid one per channel.
        num_classes: output channels, background included.
    """
    options = _options(
        config, SEGMENTATION_LOSSES, {"class_weights", "gamma", "include_background"}
    )
    weights = _weights(options, num_classes, "one per class, background first")
    weight = None if weights is None else torch.tensor(weights)
    common = {
        "to_onehot_y": True,
        "softmax": True,
        "include_background": bool(options.get("include_background", True)),
    }
    if options["name"] == "dicece":
        return DiceCELoss(weight=weight, **common)
    if options["name"] == "dice":
        return DiceLoss(weight=weight, **common)
    return DiceFocalLoss(weight=weight, gamma=options["gamma"], **common)


class RegressionLoss(nn.Module):
    """MSE, L1 or Huber loss on standardised targets.

    Args:
        config: ``{name: "mse" | "l1" | "huber", delta: float}`` or None (mse); ``delta`` is the
            Huber threshold in standard deviations of the training target.
    """

    def __init__(self, config: Mapping[str, Any] | None) -> None:
        super().__init__()
        options = _options(config, REGRESSION_LOSSES, {"delta"})
        self.name = options["name"]
        self.delta = float(options.get("delta", 1.0))
        if self.delta <= 0:
            raise ValueError(f"task.loss.delta must be > 0, got {self.delta}")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.name == "mse":
            return F.mse_loss(pred, target)
        if self.name == "l1":
            return F.l1_loss(pred, target)
        return F.huber_loss(pred, target, delta=self.delta)
