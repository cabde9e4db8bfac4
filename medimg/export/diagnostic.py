"""The exported unit: preprocessing, network and activation in one torch-only module."""

import torch
from torch import Tensor, nn

from medimg.data.preprocess import VolumePreprocessor

ACTIVATIONS = ("sigmoid", "softmax")


class DiagnosticModel(nn.Module):
    """Raw volume in its native geometry → probabilities, with the training preprocessing.

    ``forward(volume, affine)`` takes a float volume (X, Y, Z) in native units (HU for CT) and
    its 4x4 voxel→RAS affine, and returns the probabilities for one case: shape (num_classes,)
    for classification (one value for binary), (C, X', Y', Z') on the model grid for
    segmentation; ``grid_affine`` gives that grid's voxel→RAS affine.
    """

    activation: str

    def __init__(self, preprocessor: VolumePreprocessor, net: nn.Module, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.preprocessor = preprocessor
        self.net = net
        self.activation = activation

    def forward(self, volume: Tensor, affine: Tensor) -> Tensor:
        image = self.preprocessor(volume, affine).unsqueeze(0)
        logits = self.net(image)[0]
        if self.activation == "sigmoid":
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=0)

    @torch.jit.export
    def grid_affine(self, volume: Tensor, affine: Tensor) -> Tensor:
        """Voxel→RAS affine of the grid the model works on, for this input."""
        shape = [int(volume.shape[-3]), int(volume.shape[-2]), int(volume.shape[-1])]
        return self.preprocessor.grid_affine(affine, shape)
