"""Reading images and masks through MONAI readers and preparing them with the preprocessor."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai import transforms as mt
from monai.data import MetaTensor

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.data.preprocess import VolumePreprocessor
from medimg.data.reader import MedimgReader

# MONAI announces on every reader construction that NVIDIA's optional GPU codec is absent; the
# default pydicom decoders are used, which is what medimg wants on a CPU machine.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


def load_steps(with_mask: bool) -> list[mt.Transform]:
    """MONAI transforms that read ``image`` (DICOM folder or NIfTI) and, optionally, ``mask``.

    Reading goes through :class:`MedimgReader` (strict DICOM geometry) inside MONAI's
    ``LoadImaged``.

    A flat list, not a ``Compose``: ``CacheDataset`` caches up to the first randomizable
    transform, and a nested ``Compose`` counts as one.
    """
    read_keys = [keys.IMAGE, keys.MASK] if with_mask else [keys.IMAGE]
    return [
        mt.LoadImaged(read_keys, reader=MedimgReader(), image_only=True),
        mt.EnsureChannelFirstd(read_keys),
    ]


def load_transform(with_mask: bool) -> mt.Compose:
    """The reading steps as one callable transform."""
    return mt.Compose(load_steps(with_mask))


def raw_volume(image: MetaTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial array (X, Y, Z) in native units and its voxel→RAS affine (float64)."""
    return image.as_tensor()[0].to(torch.float32), image.affine.to(torch.float64)


class PrepareVolumed(mt.MapTransform):
    """Dictionary transform that applies :class:`VolumePreprocessor` to a loaded record.

    Produces a plain tensor ``image`` (1, X, Y, Z) in [0, 1] and, when present, an integer
    ``mask`` on the same grid; ``label`` becomes a tensor.
    """

    def __init__(self, preprocessor: VolumePreprocessor) -> None:
        super().__init__([keys.IMAGE], allow_missing_keys=True)
        self.preprocessor = preprocessor

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        record = dict(data)
        image = record[keys.IMAGE]
        with torch.no_grad():
            record[keys.IMAGE] = self.preprocessor(image.as_tensor().float(), image.affine)
            if keys.MASK in record and isinstance(record[keys.MASK], MetaTensor):
                mask = record[keys.MASK]
                _check_same_grid(image, mask, record.get(keys.CASE_ID))
                record[keys.MASK] = self.preprocessor.resample_mask(
                    mask.as_tensor().float(), mask.affine
                )
        if keys.LABEL in record:
            record[keys.LABEL] = torch.tensor(float(record[keys.LABEL]))
        return record


def field_of_view_gap(
    shape_a: tuple[int, ...],
    affine_a: torch.Tensor,
    shape_b: tuple[int, ...],
    affine_b: torch.Tensor,
) -> float:
    """Largest distance (mm) between matching corner voxel centres of two grids."""
    corners_a = _corner_points(tuple(shape_a), torch.as_tensor(affine_a))
    corners_b = _corner_points(tuple(shape_b), torch.as_tensor(affine_b))
    return float((corners_a - corners_b).abs().max())


def _corner_points(shape: tuple[int, ...], affine: torch.Tensor) -> torch.Tensor:
    """World coordinates of the 8 corner voxel centres, sorted so array layout does not matter."""
    grid = torch.cartesian_prod(*[torch.tensor([0.0, n - 1.0], dtype=torch.float64) for n in shape])
    points = grid @ affine[:3, :3].T.double() + affine[:3, 3].double()
    order = sorted(range(len(points)), key=lambda i: tuple(round(v, 1) for v in points[i].tolist()))
    return points[order]


def _check_same_grid(image: MetaTensor, mask: MetaTensor, case_id: object) -> None:
    """Refuse a mask whose field of view differs from its image's by more than 0.01 mm.

    The array layouts may differ (a NIfTI mask and a DICOM series often store axes in another
    order); what must agree is where the voxel grid sits in the world.
    """
    gap = field_of_view_gap(
        tuple(image.shape[1:]), image.affine, tuple(mask.shape[1:]), mask.affine
    )
    if gap > 1e-2:
        raise DataError(
            f"case {case_id}: mask geometry differs from image geometry "
            f"(image shape {tuple(image.shape[1:])}, mask shape {tuple(mask.shape[1:])}, "
            f"corners up to {gap:.2f} mm apart)"
        )
