"""Deterministic preprocessing in plain torch: resample onto a fixed grid, then normalise.

This is written by hand on purpose (see DESIGN.md, "Preprocessing is one object"): the very
same module runs in the data pipeline, in evaluation and inside the exported TorchScript
model, so a deployed model sees exactly the grid it was validated on. MONAI's
Orientation→Spacing→ResizeWithPadOrCrop chain centres its output grid differently and
cannot run inside a torch-only artefact.

3D and 2D share one code path: a 2D image (a radiograph, read by medimg as an ``(X, Y, 1)``
volume with a 4x4 affine) is resampled as a volume of one slice on a grid of one slice, which
is then squeezed away.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALISATIONS = ("window", "minmax", "percentile", "zscore")
"""Intensity normalisations: a fixed window (CT, HU) or per-image statistics (radiographs)."""

# torch.quantile refuses inputs above 2**24 elements; per-image percentiles of larger inputs
# are taken on an evenly strided subsample of at most this many values (deterministic).
_MAX_QUANTILE_VALUES = 1 << 22


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :class:`VolumePreprocessor`.

    Args:
        spacing: output voxel size in mm, one value per output axis (3 for volumes, 2 for
            2D images).
        size: output grid size in voxels, 3 values (R, A, S) for volumes or 2 for 2D images
            (the image's own plane, see :meth:`VolumePreprocessor.grid_affine`).
        window: intensity window ``(low, high)`` in input units (HU for CT), used when
            ``normalise`` is ``"window"``: values are clipped to it and scaled to ``[0, 1]``;
            ``None`` keeps the raw intensities.
        fill_value: intensity used outside the input's field of view, in input units (air
            for CT).
        normalise: ``"window"`` (fixed window, above), ``"minmax"`` (each image's min..max to
            [0, 1]), ``"percentile"`` (each image's ``percentiles`` to [0, 1], clipped) or
            ``"zscore"`` (each image's mean 0, standard deviation 1; not clipped). Per-image
            statistics are taken over the input's voxels before resampling; they suit
            radiographs, whose pixel values have no fixed unit.
        percentiles: ``(low, high)`` percentiles in [0, 100] for ``normalise="percentile"``.
    """

    spacing: tuple[float, ...] = (4.0, 4.0, 4.0)
    size: tuple[int, ...] = (48, 48, 48)
    window: tuple[float, float] | None = (-200.0, 300.0)
    fill_value: float = -1024.0
    normalise: str = "window"
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        if len(self.size) not in (2, 3) or any(int(n) < 1 for n in self.size):
            raise ValueError(
                f"preprocess.size must be 2 (2D) or 3 (3D) positive integers, got {self.size}"
            )
        if len(self.spacing) != len(self.size) or any(s <= 0 for s in self.spacing):
            raise ValueError(
                f"preprocess.spacing must be {len(self.size)} positive numbers (one per axis of "
                f"preprocess.size {list(self.size)}), got {self.spacing}"
            )
        if self.window is not None and (len(self.window) != 2 or self.window[0] >= self.window[1]):
            raise ValueError(
                f"preprocess.window must be (low, high) with low < high, got {self.window}"
            )
        if self.normalise not in NORMALISATIONS:
            raise ValueError(
                f"preprocess.normalise must be one of {NORMALISATIONS}, got {self.normalise!r}"
            )
        low, high = (float(v) for v in self.percentiles)
        if len(self.percentiles) != 2 or not 0.0 <= low < high <= 100.0:
            raise ValueError(
                "preprocess.percentiles must be (low, high) with 0 <= low < high <= 100, "
                f"got {self.percentiles}"
            )

    @property
    def spatial_dims(self) -> int:
        """2 for a 2D image grid, 3 for a volume grid."""
        return len(self.size)


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


def plane_axes(affine: Tensor) -> Tensor:
    """Unit world directions (3x3 columns) of a 2D image's output grid: two in-plane, one normal.

    The in-plane directions are the affine's first two columns, made orthogonal, each turned
    so that its largest RAS component is positive and ordered by that component's axis. So
    an image and the same image with flipped or swapped axes (and the matching affine) get
    the same grid; a radiograph read by medimg (axial-like, see ``read_dicom_series``) gets
    R, A, S. Tensor operations only (no branch on values), so it also exports with
    ``torch.export``.
    """
    m = affine[:3, :3].to(torch.float64)
    u = m[:, 0] / torch.linalg.vector_norm(m[:, 0])
    v = m[:, 1] - (m[:, 1] @ u) * u
    v = v / torch.linalg.vector_norm(v)
    iu = torch.argmax(u.abs(), dim=0, keepdim=True)
    iv = torch.argmax(v.abs(), dim=0, keepdim=True)
    u = u * torch.sign(u.gather(0, iu))
    v = v * torch.sign(v.gather(0, iv))
    swap = iv < iu
    first, second = torch.where(swap, v, u), torch.where(swap, u, v)
    return torch.stack([first, second, torch.linalg.cross(first, second)], dim=1)


class VolumePreprocessor(torch.nn.Module):
    """Resample an image given its voxel→RAS affine onto a fixed grid and normalise it.

    A 3D grid has ``size`` voxels of ``spacing`` mm, oriented R, A, S; a 2D grid lies in the
    input image's plane (see :func:`plane_axes`). Either is centred on the centre of the
    input's field of view. Scriptable with ``torch.jit.script``.

    Example:
        >>> pre = VolumePreprocessor(PreprocessConfig(spacing=(2.0, 2.0, 2.0), size=(8, 8, 8)))
        >>> pre(torch.zeros(10, 10, 10), torch.eye(4, dtype=torch.float64)).shape
        torch.Size([1, 8, 8, 8])
        >>> pre2d = VolumePreprocessor(PreprocessConfig(spacing=(2.0, 2.0), size=(8, 8)))
        >>> pre2d(torch.zeros(10, 10, 1), torch.eye(4, dtype=torch.float64)).shape
        torch.Size([1, 8, 8])
    """

    size: list[int]
    grid_size: list[int]
    planar: bool
    mode: str
    use_window: bool
    low: float
    high: float
    fill_value: float
    q_low: float
    q_high: float
    max_quantile_values: int

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        self.planar = config.spatial_dims == 2
        # A 2D grid is a 3D grid of one slice (spacing 1 mm along the normal; never sampled).
        spacing = [float(s) for s in config.spacing] + ([1.0] if self.planar else [])
        self.register_buffer("spacing", torch.tensor(spacing, dtype=torch.float64))
        self.size = [int(n) for n in config.size]
        self.grid_size = self.size + ([1] if self.planar else [])
        self.mode = config.normalise
        self.use_window = config.window is not None
        low, high = config.window if config.window is not None else (0.0, 1.0)
        self.low = float(low)
        self.high = float(high)
        self.fill_value = float(config.fill_value)
        self.q_low = float(config.percentiles[0]) / 100.0
        self.q_high = float(config.percentiles[1]) / 100.0
        self.max_quantile_values = _MAX_QUANTILE_VALUES

    @torch.jit.export
    def grid_affine(self, affine: Tensor, shape: list[int]) -> Tensor:
        """Voxel→RAS affine (4x4) of the output grid for an input of spatial ``shape`` and ``affine``.

        For a 2D grid it is the affine of the one-slice grid whose first two axes are the
        output's (X, Y); ``shape`` may then be ``(X, Y)`` or ``(X, Y, 1)``.
        """
        affine = affine.to(torch.float64)
        full = [int(n) for n in shape] + [1] * (3 - len(shape))
        half_in = torch.tensor([(n - 1) / 2.0 for n in full], dtype=torch.float64)
        centre = affine[:3, :3] @ half_in + affine[:3, 3]
        half_out = torch.tensor([(n - 1) / 2.0 for n in self.grid_size], dtype=torch.float64)
        axes = torch.eye(3, dtype=torch.float64)
        if self.planar:
            axes = plane_axes(affine)
        spacing = self.spacing.to(torch.float64)
        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3] = axes * spacing
        out[:3, 3] = centre - axes @ (spacing * half_out)
        return out

    def _sampling_grid(self, affine: Tensor, shape: list[int]) -> Tensor:
        """Grid for ``grid_sample``: output voxel → input voxel index, normalised to [-1, 1]."""
        to_input = invert_affine(affine.to(torch.float64)) @ self.grid_affine(affine, shape)
        axes = [torch.arange(n, dtype=torch.float64) for n in self.grid_size]
        gi, gj, gk = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
        points = torch.stack([gi, gj, gk, torch.ones_like(gi)], dim=-1)
        index = (points @ to_input.T)[..., :3]
        # An input axis of one voxel maps every coordinate to index 0 (align_corners=True).
        denom = torch.tensor([max(n - 1, 1) for n in shape], dtype=torch.float64)
        norm = 2.0 * index / denom - 1.0
        # grid_sample wants (x, y, z) = (last, middle, first) input dimension.
        return norm.flip(-1).unsqueeze(0).to(torch.float32)

    def _channels_first(self, volume: Tensor) -> Tensor:
        """``volume`` as (C, X, Y, Z); a 2D grid also takes (X, Y), and needs Z == 1."""
        if volume.dim() == 2:
            if not self.planar:
                raise ValueError("a 3D preprocessing grid needs a (X, Y, Z) or (C, X, Y, Z) input")
            volume = volume.unsqueeze(-1)
        if volume.dim() == 3:
            volume = volume.unsqueeze(0)
        if volume.dim() != 4:
            raise ValueError("input must be (X, Y, Z) or (C, X, Y, Z); (X, Y) for a 2D grid")
        if self.planar and volume.shape[3] != 1:
            raise ValueError(
                "a 2D preprocessing grid (2-element preprocess.size) needs a 2D image: "
                "(X, Y), (X, Y, 1) or (C, X, Y, 1)"
            )
        return volume

    def resample(
        self, volume: Tensor, affine: Tensor, mode: str = "bilinear", fill: float = 0.0
    ) -> Tensor:
        """Resample ``volume`` (C, X, Y, Z) onto the output grid; outside the input is ``fill``.

        Returns (C, X', Y', Z'), or (C, X', Y') for a 2D grid.
        """
        shape = [int(volume.shape[1]), int(volume.shape[2]), int(volume.shape[3])]
        grid = self._sampling_grid(affine, shape).to(volume.device)
        shifted = volume.to(torch.float32).unsqueeze(0) - fill
        out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)
        out = out[0] + fill
        if self.planar:
            out = out[..., 0]
        return out

    def intensity_range(self, volume: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image ``(low, high)`` bounds of ``volume``, or ``(mean, std)`` for z-scores."""
        values = volume.detach().reshape(-1).to(torch.float32)
        if self.mode == "zscore":
            return values.mean(), values.std(unbiased=False).clamp_min(1e-6)
        if self.mode == "minmax":
            low, high = values.min(), values.max()
        else:
            cap = self.max_quantile_values
            step = (values.numel() + cap - 1) // cap
            sample = values[::step].to(torch.float64)
            quantiles = torch.tensor([self.q_low, self.q_high], dtype=torch.float64)
            bounds = torch.quantile(sample, quantiles).to(torch.float32)
            low, high = bounds[0], bounds[1]
        return low, torch.maximum(high, low + 1e-6)

    def normalise(self, image: Tensor, volume: Tensor) -> Tensor:
        """Scale ``image`` by the window, or by per-image statistics of the input ``volume``.

        Window and per-image bounds clip to ``[low, high]`` and scale to [0, 1]; z-scores are
        ``(x - mean) / std``, unclipped.
        """
        if self.mode == "window":
            if not self.use_window:
                return image
            return (image.clamp(self.low, self.high) - self.low) / (self.high - self.low)
        low, high = self.intensity_range(volume)
        if self.mode == "zscore":
            return (image - low) / high
        return (torch.minimum(torch.maximum(image, low), high) - low) / (high - low)

    def forward(self, volume: Tensor, affine: Tensor) -> Tensor:
        """Prepare an image: ``volume`` (X, Y, Z) or (C, X, Y, Z), ``affine`` voxel→RAS (4x4).

        Returns (C, X', Y', Z') on the output grid, or (C, X', Y') for a 2D grid (whose input
        is a 2D image: (X, Y), (X, Y, 1) or (C, X, Y, 1)).
        """
        volume = self._channels_first(volume)
        image = self.resample(volume, affine, "bilinear", self.fill_value)
        return self.normalise(image, volume)

    @torch.jit.export
    def resample_mask(self, mask: Tensor, affine: Tensor) -> Tensor:
        """Resample a label map (X, Y, Z) or (1, X, Y, Z) with nearest neighbour, as integers.

        A 2D grid also takes (X, Y) and returns (1, X', Y').
        """
        mask = self._channels_first(mask)
        return self.resample(mask, affine, "nearest", 0.0).round().to(torch.int64)
