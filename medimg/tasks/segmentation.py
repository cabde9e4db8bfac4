"""Semantic segmentation with MONAI losses, sliding-window inference and post-processing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import KeepLargestConnectedComponent
from torch import Tensor, nn

from medimg.data import keys
from medimg.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory
from medimg.tasks.losses import segmentation_loss
from medimg.tasks.metrics import ForegroundDice

_INFERENCE_KEYS = {"roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale"}


def sliding_window(inference: Mapping[str, Any] | None) -> SlidingWindowInferer | None:
    """MONAI's sliding-window inferer from ``task.inference``, or None without ``roi_size``."""
    options = dict(inference or {})
    unknown = set(options) - _INFERENCE_KEYS
    if unknown:
        raise ValueError(
            f"task.inference has unknown keys {sorted(unknown)}; accepted: {sorted(_INFERENCE_KEYS)}"
        )
    if options.get("roi_size") is None:
        return None
    roi_size = [int(v) for v in options["roi_size"]]
    if any(v < 1 for v in roi_size):
        raise ValueError(f"task.inference.roi_size must be positive sizes, got {roi_size}")
    overlap = float(options.get("overlap", 0.25))
    if not 0 <= overlap < 1:
        raise ValueError(f"task.inference.overlap must be in [0, 1), got {overlap}")
    return SlidingWindowInferer(
        roi_size=roi_size,
        sw_batch_size=int(options.get("sw_batch_size", 1)),
        overlap=overlap,
        mode=str(options.get("mode", "gaussian")),
        sigma_scale=float(options.get("sigma_scale", 0.125)),
    )


def _keep_largest_labels(keep_largest: bool | Sequence[int] | None, num_classes: int) -> list[int]:
    """Foreground classes whose largest connected component alone is kept."""
    if keep_largest is None or keep_largest is False:
        return []
    if keep_largest is True:
        return list(range(1, num_classes))
    labels = [int(v) for v in keep_largest]
    bad = [v for v in labels if not 1 <= v < num_classes]
    if bad:
        raise ValueError(
            f"task.keep_largest must list foreground classes 1..{num_classes - 1}, got {bad}"
        )
    return labels


class SegmentationTask(BaseTask):
    """Voxel-wise segmentation of 2D or 3D images.

    Logs ``{stage}/dice``, the mean over foreground classes of each class's mean Dice over the
    cases whose reference contains it, and ``{stage}/dice_<class name>`` per class.

    Args:
        net: network with ``num_classes`` output channels (background included).
        optimizer: optimiser factory.
        scheduler: optional scheduler factory.
        num_classes: output channels including background (2 for binary).
        label_names: class names, background first.
        monitor: metric a plateau scheduler watches.
        loss: ``{name: "dicece" | "dice" | "dicefocal", class_weights, gamma,
            include_background}``; None is DiceCE.
        inference: ``{roi_size: list | None, sw_batch_size: int, overlap: float, mode: str,
            sigma_scale: float}``; with ``roi_size`` validation, test and prediction tile the
            image with MONAI's ``SlidingWindowInferer`` (default Gaussian blending).
        tta_flips: average the softmax of the image and of its flip along each spatial axis
            (each flipped back) in validation, test and prediction.
        keep_largest: True (every foreground class) or a list of classes whose largest
            connected component alone is kept in the predicted mask, for metrics and for the
            ``pred_mask`` that prediction then also returns.
        compile: run the network through ``torch.compile``.
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
        loss: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        tta_flips: bool = False,
        keep_largest: bool | list[int] = False,
        compile: bool = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, compile)
        if num_classes < 2:
            raise ValueError(
                f"task.num_classes must be >= 2 (background included), got {num_classes}"
            )
        if self.takes_covariates:
            raise ValueError(
                "task: segmentation networks take no covariates (net.takes_covariates)"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        if not label_names:  # None, or the schema's empty default
            default = (
                ["lesion"] if num_classes == 2 else [f"class{i}" for i in range(1, num_classes)]
            )
            label_names = ["background", *default]
        names = list(label_names)
        if len(names) != num_classes:
            raise ValueError(
                f"task.label_names must name all {num_classes} classes (background first), "
                f"got {len(names)}: {names}"
            )
        self.label_names = names
        self.criterion = segmentation_loss(loss, num_classes)
        self.inferer = sliding_window(inference)
        self.tta_flips = bool(tta_flips)
        self.keep_largest = _keep_largest_labels(keep_largest, num_classes)
        self.dice = nn.ModuleDict({stage: ForegroundDice(num_classes) for stage in ("val", "test")})

    def target(self, batch: dict) -> Tensor:
        return batch[keys.MASK]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.criterion(logits, target)

    def activate(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1)

    def _tiled(self, image: Tensor) -> Tensor:
        """Logits of the whole image, tiled when ``inference.roi_size`` is set."""
        if self.inferer is None:
            return self._runner()(image)
        if len(self.inferer.roi_size) != image.ndim - 2:
            raise ValueError(
                f"task.inference.roi_size {list(self.inferer.roi_size)} has "
                f"{len(self.inferer.roi_size)} axes but the images have {image.ndim - 2}"
            )
        return self.inferer(image, self._runner())

    def infer(self, image: Tensor, covariates: Tensor | None = None) -> Tensor:
        """Logits for evaluation; with ``tta_flips`` the log of the flip-averaged softmax."""
        if not self.tta_flips:
            return self._tiled(image)
        probs = torch.softmax(self._tiled(image), dim=1)
        for axis in range(2, image.ndim):
            probs = probs + torch.softmax(self._tiled(image.flip(axis)), dim=1).flip(axis)
        probs = probs / (image.ndim - 1)
        # log p is a valid logit: softmax(log p) = p, so the loss and activate stay unchanged.
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def label_map(self, probs: Tensor) -> Tensor:
        """Argmax label map ``(B, 1, *spatial)``, post-processed when ``keep_largest`` is set."""
        mask = probs.argmax(dim=1, keepdim=True)
        if not self.keep_largest:
            return mask
        keep = KeepLargestConnectedComponent(applied_labels=self.keep_largest, is_onehot=False)
        return torch.stack([torch.as_tensor(keep(case)).to(mask) for case in mask])

    def update_metrics(self, stage: str, probs: Tensor, target: Tensor) -> None:
        self.dice[stage].update(self.label_map(probs), target)

    def log_metrics(self, stage: str) -> None:
        metric = self.dice[stage]
        if metric.update_count > 0:
            # Sums of every process under DDP; torchmetrics squeezes a one-class result.
            per_class = metric.compute().reshape(-1)
            defined = ~torch.isnan(per_class)
            if defined.any():  # no Dice when no case had foreground
                self.log(f"{stage}/dice", per_class[defined].mean().float(), prog_bar=True)
            for name, value in zip(self.label_names[1:], per_class, strict=True):
                if not torch.isnan(value):
                    self.log(f"{stage}/dice_{name}", value.float())
        metric.reset()

    def predict_outputs(self, logits: Tensor) -> dict[str, Tensor]:
        probs = self.activate(logits)
        out = {"prob": probs.float().cpu()}
        if self.keep_largest:
            out["pred_mask"] = self.label_map(probs).long().cpu()
        return out
