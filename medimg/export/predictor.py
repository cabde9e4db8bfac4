"""What the exported model calls as its network: the bare net, tiled, and/or flip-averaged.

A segmentation task may evaluate with MONAI's sliding-window inferer (``task.inference``)
and flip test-time augmentation (``task.tta_flips``). MONAI's inferer is not scriptable, but
the prepared image always has the preprocessing grid's fixed size, so every window position
and MONAI's own importance map can be computed once at export time (with MONAI) and stored;
the exported module then only slices, runs the net, weights and averages — plain torch, the
same windows and weights as MONAI, so the exported model reproduces evaluation.
Largest-connected-component post-processing (``task.keep_largest``) has no torch op: it is
left out and listed as a gap in the card.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medimg.export.diagnostic import DiagnosticModel, build_diagnostic

# torch.finfo(torch.float32).tiny, as SegmentationTask clamps with (finfo does not script).
FLOAT32_TINY = 1.1754943508222875e-38


class TiledNet(nn.Module):
    """Sliding-window inference over a fixed image size, equal to MONAI's for that size.

    Args:
        net: the network (logits of a window).
        image_size: spatial size of the prepared image (the preprocessing grid).
        roi_size: window size; overlap, mode, sigma_scale as in ``SlidingWindowInferer``.
        out_channels: channels the network returns.
    """

    starts: list[list[int]]
    roi: list[int]
    pad: list[int]
    size: list[int]
    out_channels: int

    def __init__(
        self,
        net: nn.Module,
        image_size: list[int],
        roi_size: list[int],
        overlap: float,
        mode: str,
        sigma_scale: float,
        out_channels: int,
    ) -> None:
        super().__init__()
        from monai.inferers.utils import (
            _get_scan_interval,
            compute_importance_map,
            dense_patch_slices,
        )

        dims = len(image_size)
        self.net = net
        self.size = [int(n) for n in image_size]
        self.roi = [int(r) for r in roi_size]
        padded = [max(n, r) for n, r in zip(self.size, self.roi, strict=True)]
        # F.pad order (last axis first), half before / rest after, like MONAI.
        self.pad = []
        for axis in reversed(range(dims)):
            diff = max(self.roi[axis] - self.size[axis], 0)
            self.pad.extend([diff // 2, diff - diff // 2])
        interval = _get_scan_interval(padded, self.roi, dims, (float(overlap),) * dims)
        slices = dense_patch_slices(padded, self.roi, interval, return_slice=False)
        self.starts = [[int(s[axis][0]) for axis in range(dims)] for s in slices]
        weight = compute_importance_map(
            tuple(min(p, r) for p, r in zip(padded, self.roi, strict=True)),
            mode=mode,
            sigma_scale=sigma_scale,
            device="cpu",
            dtype=torch.float32,
        )
        self.register_buffer("weight", weight.reshape(1, 1, *weight.shape).float())
        self.out_channels = int(out_channels)

    def forward(self, image: Tensor) -> Tensor:
        x = F.pad(image, self.pad) if sum(self.pad) > 0 else image
        shape = [int(x.shape[0]), self.out_channels] + [int(n) for n in x.shape[2:]]
        total = torch.zeros(shape, dtype=x.dtype, device=x.device)
        count = torch.zeros([1, 1] + shape[2:], dtype=x.dtype, device=x.device)
        for start in self.starts:
            window = x
            for axis in range(len(start)):
                window = window.narrow(axis + 2, start[axis], self.roi[axis])
            logits = self.net(window)
            out_view = total
            count_view = count
            for axis in range(len(start)):
                out_view = out_view.narrow(axis + 2, start[axis], self.roi[axis])
                count_view = count_view.narrow(axis + 2, start[axis], self.roi[axis])
            out_view.add_(logits * self.weight)
            count_view.add_(self.weight)
        out = total / count
        for axis in range(len(self.size)):
            before = self.pad[2 * (len(self.size) - 1 - axis)]
            out = out.narrow(axis + 2, before, self.size[axis])
        return out


class FlipAveraged(nn.Module):
    """Log of the softmax averaged over the image and its flip along each spatial axis.

    The same formula as ``SegmentationTask.infer`` with ``tta_flips``; a softmax of the
    result gives the averaged probabilities.
    """

    tiny: float

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.tiny = FLOAT32_TINY

    def forward(self, image: Tensor) -> Tensor:
        probs = torch.softmax(self.net(image), dim=1)
        for axis in range(2, image.dim()):
            probs = probs + torch.softmax(self.net(image.flip(axis)), dim=1).flip(axis)
        probs = probs / (image.dim() - 1)
        return probs.clamp_min(self.tiny).log()


def diagnostic_from_task(task: Any, preprocessor: Any) -> tuple[DiagnosticModel, list[str]]:
    """The exported unit that reproduces ``task``'s evaluation, and the gaps left."""
    net, gaps = task_predictor(task, [int(n) for n in preprocessor.size])
    scale = float(getattr(task, "target_std", 1.0))
    shift = float(getattr(task, "target_mean", 0.0))
    model = build_diagnostic(
        preprocessor,
        net,
        task.kind,
        int(getattr(task, "num_classes", 1)),
        multilabel=bool(getattr(task, "multilabel", False)),
        scale=scale,
        shift=shift,
    )
    return model, gaps


def task_predictor(task: Any, image_size: list[int]) -> tuple[nn.Module, list[str]]:
    """The module that reproduces ``task.infer`` on a prepared image, and the gaps left.

    Returns the bare ``task.net`` for tasks without tiling or augmentation.
    """
    net: nn.Module = task.net.eval().cpu()
    gaps: list[str] = []
    inferer = getattr(task, "inferer", None)
    if inferer is not None:
        net = TiledNet(
            net,
            image_size,
            list(inferer.roi_size),
            float(
                inferer.overlap[0]
                if isinstance(inferer.overlap, (list, tuple))
                else inferer.overlap
            ),
            str(inferer.mode),
            float(
                inferer.sigma_scale
                if not isinstance(inferer.sigma_scale, (list, tuple))
                else inferer.sigma_scale[0]
            ),
            int(task.num_classes),
        )
    if getattr(task, "tta_flips", False):
        net = FlipAveraged(net)
    if getattr(task, "keep_largest", None):
        gaps.append(
            "task.keep_largest (largest connected component) is not in the exported model: "
            "torch has no connected-components operation; apply it to the returned label map"
        )
    return net.eval(), gaps
