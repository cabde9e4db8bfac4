"""Deterministic preprocessing in plain torch: resample onto a fixed RAS grid, then window.

This is written by hand on purpose (see DESIGN.md, "Preprocessing is one object"): the very
same module runs in the data pipeline, in evaluation and inside the exported TorchScript
model, so a deployed model sees exactly the grid it was validated on. MONAI's
Orientation→Spacing→ResizeWithPadOrCrop chain centres its output grid differently and
cannot run inside a torch-only artefact.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :class:`VolumePreprocessor`.

    Args:
        spacing: output voxel size in mm along R, A, S.
        size: output grid size in voxels along R, A, S.
        window: intensity window ``(low, high)`` in input units (HU for CT); values are
            clipped to it and scaled to ``[0, 1]``. ``None`` keeps the raw intensities.
        fill_value: intensity used outside the input's field of view (air for CT).
    """

    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    size: tuple[int, int, int] = (48, 48, 48)
    window: tuple[float, float] | None = (-200.0, 300.0)
    fill_value: float = -1024.0

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or any(s <= 0 for s in self.spacing):
            raise ValueError(f"preprocess.spacing must be 3 positive numbers, got {self.spacing}")
        if len(self.size) != 3 or any(int(n) < 1 for n in self.size):
            raise ValueError(f"preprocess.size must be 3 positive integers, got {self.size}")
        if self.window is not None and (len(self.window) != 2 or self.window[0] >= self.window[1]):
            raise ValueError(
                f"preprocess.window must be (low, high) with low < high, got {self.window}"
            )


def invert_affine(affine: Tensor) -> Tensor:
    """Invert a 4x4 affine in closed form (adjugate of the 3x3 part; ONNX has no inverse op)."""
    m = affine[:3, :3]
    a, b, c = m[0, 0], m[0, 1], m[0, 2]
    d, e, f = m[1, 0], m[1, 1], m[1, 2]
    g, h, i = m[2, 0], m[2, 1], m[2, 2]
    cof = torch.stack(
        [
            torch.stack([e * i - f * h, c * h - b * i, b * f - c * e]),
            torch.stack([f * g - d * i, a * i - c * g, c * d - a * f]),
            torch.stack([d * h - e * g, b * g - a * h, a * e - b * d]),
        ]
    )
    det = a * cof[0, 0] + b * cof[1, 0] + c * cof[2, 0]
    rot_inv = cof / det
    out = torch.eye(4, dtype=affine.dtype, device=affine.device)
    out[:3, :3] = rot_inv
    out[:3, 3] = -(rot_inv @ affine[:3, 3])
    return out


class VolumePreprocessor(torch.nn.Module):
    """Resample a volume given its voxel→RAS affine onto an axis-aligned RAS grid and window it.

    The output grid has ``size`` voxels of ``spacing`` mm, is oriented R, A, S and is centred on
    the centre of the input's field of view. Scriptable with ``torch.jit.script``.

    Example:
        >>> pre = VolumePreprocessor(PreprocessConfig(spacing=(2.0, 2.0, 2.0), size=(8, 8, 8)))
        >>> pre(torch.zeros(10, 10, 10), torch.eye(4, dtype=torch.float64)).shape
        torch.Size([1, 8, 8, 8])
    """

    size: list[int]
    use_window: bool
    low: float
    high: float
    fill_value: float

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        self.register_buffer("spacing", torch.tensor(config.spacing, dtype=torch.float64))
        self.size = [int(n) for n in config.size]
        self.use_window = config.window is not None
        low, high = config.window if config.window is not None else (0.0, 1.0)
        self.low = float(low)
        self.high = float(high)
        self.fill_value = float(config.fill_value)

    def grid_affine(self, affine: Tensor, shape: list[int]) -> Tensor:
        """Voxel→RAS affine of the output grid for an input of spatial ``shape`` and ``affine``."""
        affine = affine.to(torch.float64)
        half_in = torch.tensor([(n - 1) / 2.0 for n in shape], dtype=torch.float64)
        centre = affine[:3, :3] @ half_in + affine[:3, 3]
        half_out = torch.tensor([(n - 1) / 2.0 for n in self.size], dtype=torch.float64)
        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3] = torch.diag(self.spacing.to(torch.float64))
        out[:3, 3] = centre - self.spacing.to(torch.float64) * half_out
        return out

    def _sampling_grid(self, affine: Tensor, shape: list[int]) -> Tensor:
        """Grid for ``grid_sample``: output voxel → input voxel index, normalised to [-1, 1]."""
        to_input = invert_affine(affine.to(torch.float64)) @ self.grid_affine(affine, shape)
        axes = [torch.arange(n, dtype=torch.float64) for n in self.size]
        gi, gj, gk = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
        points = torch.stack([gi, gj, gk, torch.ones_like(gi)], dim=-1)
        index = (points @ to_input.T)[..., :3]
        denom = torch.tensor([max(n - 1, 1) for n in shape], dtype=torch.float64)
        norm = 2.0 * index / denom - 1.0
        # grid_sample wants (x, y, z) = (last, middle, first) input dimension.
        return norm.flip(-1).unsqueeze(0).to(torch.float32)

    def resample(
        self, volume: Tensor, affine: Tensor, mode: str = "bilinear", fill: float = 0.0
    ) -> Tensor:
        """Resample ``volume`` (C, X, Y, Z) onto the output grid; outside the input is ``fill``."""
        shape = [int(volume.shape[1]), int(volume.shape[2]), int(volume.shape[3])]
        grid = self._sampling_grid(affine, shape).to(volume.device)
        shifted = volume.to(torch.float32).unsqueeze(0) - fill
        out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)
        return out[0] + fill

    def normalise(self, image: Tensor) -> Tensor:
        """Clip to the intensity window and scale to [0, 1]."""
        if not self.use_window:
            return image
        return (image.clamp(self.low, self.high) - self.low) / (self.high - self.low)

    def forward(self, volume: Tensor, affine: Tensor) -> Tensor:
        """Prepare an image: ``volume`` (X, Y, Z) or (C, X, Y, Z), ``affine`` voxel→RAS (4x4)."""
        if volume.dim() == 3:
            volume = volume.unsqueeze(0)
        return self.normalise(self.resample(volume, affine, "bilinear", self.fill_value))

    def resample_mask(self, mask: Tensor, affine: Tensor) -> Tensor:
        """Resample a label map (X, Y, Z) or (1, X, Y, Z) with nearest neighbour, as integers."""
        if mask.dim() == 3:
            mask = mask.unsqueeze(0)
        return self.resample(mask, affine, "nearest", 0.0).round().to(torch.int64)
