"""The exported unit: preprocessing, network, activation and the way back, in one torch module.

Everything here is plain torch and scriptable (``torch.jit.script``) and traceable
(``torch.export``), so the exported file runs without medimg or MONAI.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medimg.data.preprocess import VolumePreprocessor, invert_affine

ACTIVATIONS = ("sigmoid", "softmax", "none")
KINDS = ("classification", "segmentation", "regression")
# Input slices mapped back per step: bounds the sampling grid's memory for large volumes
# (a 512x512 slab of 16 slices needs ~50 MB of float32 coordinates).
SLAB = 16


class ImageOnly(nn.Module):
    """Calls an image-only network; the covariates argument is ignored."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, covariates: Optional[Tensor]) -> Tensor:  # noqa: UP045
        return self.net(image)


class WithCovariates(nn.Module):
    """Calls an image + covariates network (e.g. FusionNet) with one case's covariates."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, covariates: Optional[Tensor]) -> Tensor:  # noqa: UP045
        if covariates is None:
            raise ValueError("this model needs the case's covariates (float, NaN = missing)")
        return self.net(image, covariates.reshape(1, -1).to(image.dtype))


class DiagnosticModel(nn.Module):
    """Raw image in its native geometry → probabilities, with the training preprocessing.

    ``forward(volume, affine)`` takes a float volume (X, Y, Z) in native units (HU for CT)
    and its 4x4 voxel→RAS affine (float64), resamples it exactly as the training data was
    (:class:`VolumePreprocessor`), runs the network and the activation, and returns:

    - classification: probabilities (num_classes,) — one value for a binary task;
    - regression: the outputs (num_outputs,) in target units (activation ``none``:
      ``output * scale + shift``, the task's target standardisation undone);

    A network that takes clinical covariates (``takes_covariates``) gets them as a third
    argument: a float vector (D,) of raw values, NaN where missing.
    - segmentation: class probabilities (C, X, Y, Z) **on the input's own voxel grid**: the
      model-grid probabilities are resampled trilinearly onto every input voxel (outside
      the model grid's field of view: background 1, other classes 0); the label map is
      their ``argmax`` over C (see :meth:`label_map`). Interpolating probabilities and then
      taking the argmax gives smooth borders, where nearest-neighbour copying of a
      model-grid label map would give 4 mm staircases on a 1 mm scan.

    :meth:`model_grid_probs` returns the probabilities on the model grid (what evaluation
    on prepared data computes) and :meth:`grid_affine` that grid's affine.

    Extension point: ``net`` is called once on the whole prepared image (1, 1, *size); a
    tiled (sliding-window) predictor written in plain torch can be passed as ``net``.
    """

    activation: str
    kind: str
    grid_size: list[int]
    slab: int
    scale: float
    shift: float

    def __init__(
        self,
        preprocessor: VolumePreprocessor,
        net: nn.Module,
        activation: str,
        kind: str = "classification",
        slab: int = SLAB,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "segmentation" and activation != "softmax":
            raise ValueError("a segmentation model needs the softmax activation")
        self.preprocessor = preprocessor
        # Called as net(image, covariates): wrap bare networks (see ImageOnly/WithCovariates).
        if not isinstance(net, (ImageOnly, WithCovariates)):
            net = WithCovariates(net) if getattr(net, "takes_covariates", False) else ImageOnly(net)
        self.net = net
        self.activation = activation
        self.scale = float(scale)
        self.shift = float(shift)
        self.kind = kind
        size = [int(n) for n in preprocessor.size]
        # A 2D preprocessing grid is a one-slice 3D grid (VolumePreprocessor.grid_size).
        self.grid_size = [int(n) for n in getattr(preprocessor, "grid_size", size)]
        self.slab = int(slab)

    def forward(
        self,
        volume: Tensor,
        affine: Tensor,
        covariates: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tensor:
        probs = self.model_grid_probs(volume, affine, covariates)
        if self.kind == "segmentation":
            return self.to_input_grid(probs, volume, affine)
        return probs

    @torch.jit.export
    def model_grid_probs(
        self,
        volume: Tensor,
        affine: Tensor,
        covariates: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tensor:
        """Probabilities on the model grid: (num_classes,) or (C, *size)."""
        image = self.preprocessor(volume, affine).unsqueeze(0)
        logits = self.net(image, covariates)[0]
        if self.activation == "sigmoid":
            return torch.sigmoid(logits.reshape(-1))
        if self.activation == "none":
            return logits.reshape(-1) * self.scale + self.shift
        return torch.softmax(logits, dim=0)

    @torch.jit.export
    def label_map(self, volume: Tensor, affine: Tensor) -> Tensor:
        """Segmentation label map (X, Y, Z) on the input grid, int64 (0 = background)."""
        return self.forward(volume, affine, None).argmax(0)

    @torch.jit.export
    def grid_affine(self, volume: Tensor, affine: Tensor) -> Tensor:
        """Voxel→RAS affine of the grid the model works on, for this input."""
        return self.preprocessor.grid_affine(affine, _spatial_shape(volume))

    @torch.jit.export
    def to_input_grid(self, probs: Tensor, volume: Tensor, affine: Tensor) -> Tensor:
        """Resample model-grid class probabilities (C, *size) onto ``volume``'s voxel grid.

        Returns (C, X, Y, Z) (or (C, X, Y) for a 2D input); trilinear, background-filled.
        """
        shape = _spatial_shape(volume)
        grid = probs if probs.dim() == 4 else probs.unsqueeze(-1)
        # input voxel index → model-grid voxel index
        to_model = invert_affine(self.grid_affine(volume, affine)) @ affine.to(torch.float64)
        denom = torch.tensor([max(n - 1, 1) for n in self.grid_size], dtype=torch.float64)
        fill = torch.zeros(grid.shape[0], 1, 1, 1, dtype=grid.dtype, device=grid.device)
        fill[0] = 1.0
        source = (grid - fill).unsqueeze(0)
        ii = torch.arange(shape[0], dtype=torch.float64).reshape(-1, 1, 1)
        jj = torch.arange(shape[1], dtype=torch.float64).reshape(1, -1, 1)
        slabs: list[Tensor] = []
        for start in range(0, shape[2], self.slab):
            stop = min(start + self.slab, shape[2])
            kk = torch.arange(start, stop, dtype=torch.float64).reshape(1, 1, -1)
            coords: list[Tensor] = []
            for axis in range(3):
                index = (
                    to_model[axis, 0] * ii
                    + to_model[axis, 1] * jj
                    + to_model[axis, 2] * kk
                    + to_model[axis, 3]
                )
                coords.append(2.0 * index / denom[axis] - 1.0)
            # grid_sample wants (x, y, z) = (last, middle, first) model-grid dimension.
            points = torch.stack([coords[2], coords[1], coords[0]], dim=-1).to(torch.float32)
            sampled = F.grid_sample(
                source,
                points.unsqueeze(0),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            slabs.append(sampled[0])
        out = torch.cat(slabs, dim=3) + fill
        if volume.dim() == 2:
            out = out[..., 0]
        return out


def _spatial_shape(volume: Tensor) -> list[int]:
    """Spatial (X, Y, Z) of a (X, Y), (X, Y, Z) or (C, X, Y, Z) input; Z = 1 for 2D."""
    if volume.dim() == 2:
        return [int(volume.shape[0]), int(volume.shape[1]), 1]
    return [int(volume.shape[-3]), int(volume.shape[-2]), int(volume.shape[-1])]


def build_diagnostic(
    preprocessor: VolumePreprocessor,
    net: nn.Module,
    kind: str,
    num_classes: int,
    multilabel: bool = False,
    scale: float = 1.0,
    shift: float = 0.0,
) -> DiagnosticModel:
    """The exported unit for a task.

    Activation: sigmoid for binary or multi-label classification, softmax for multi-class
    and segmentation, ``output * scale + shift`` for regression.
    """
    if kind == "regression":
        activation = "none"
    elif kind == "classification" and (num_classes == 1 or multilabel):
        activation = "sigmoid"
    else:
        activation = "softmax"
    return DiagnosticModel(
        preprocessor, net.eval(), activation, kind, scale=scale, shift=shift
    ).eval()
