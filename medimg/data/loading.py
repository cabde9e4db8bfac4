"""Reading images and masks through MONAI readers and preparing them with the preprocessor."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from medimg.data import keys
from medimg.data.dicom_seg import align_to_grid
from medimg.data.errors import DataError
from medimg.data.preprocess import VolumePreprocessor
from medimg.data.reader import MedimgReader

# MONAI announces on every reader construction that NVIDIA's optional GPU codec is absent; the
# default pydicom decoders are used, which is what medimg wants on a CPU machine.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


def load_steps(with_mask: bool, repair_tilt: bool = False) -> list[mt.Transform]:
    """MONAI transforms that read ``image`` (DICOM folder or NIfTI) and, optionally, ``mask``.

    Reading goes through :class:`MedimgReader` (strict DICOM geometry) and nothing else (see
    :class:`StrictLoadImaged`); ``repair_tilt`` keeps gantry-tilted series as sheared affines
    instead of refusing them. A mask may also be a DICOM SEG file.

    A flat list, not a ``Compose``: ``CacheDataset`` caches up to the first randomizable
    transform, and a nested ``Compose`` counts as one.
    """
    read_keys = [keys.IMAGE, keys.MASK] if with_mask else [keys.IMAGE]
    return [
        StrictLoadImaged(read_keys, MedimgReader(repair_tilt=repair_tilt)),
        mt.EnsureChannelFirstd(read_keys),
    ]


class StrictLoadImaged(mt.LoadImaged):
    """``LoadImaged`` whose reader's refusal is final.

    MONAI's ``LoadImaged`` retries a file that its reader refuses with every default reader
    (pydicom, nibabel, ...), so a series :class:`MedimgReader` refuses (several series,
    missing slices, gantry tilt, overlapping SEG segments) would be read anyway, by rules
    medimg does not check. Here only ``reader`` reads, and its ``DataError`` propagates.

    Args:
        keys: Record keys to read.
        reader: The reader.
    """

    def __init__(self, keys: Sequence[str], reader: MedimgReader) -> None:
        super().__init__(keys, reader=reader, image_only=True)
        self.reader = reader

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        return super().__call__(data, reader or self.reader)


def load_transform(with_mask: bool, repair_tilt: bool = False) -> mt.Compose:
    """The reading steps (see :func:`load_steps`) as one callable transform."""
    return mt.Compose(load_steps(with_mask, repair_tilt))


def raw_volume(image: MetaTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial array (X, Y, Z) in native units and its voxel→RAS affine (float64).

    A 2D image (radiograph) is ``(X, Y, 1)``, as :class:`MedimgReader` reads it.
    """
    return image.as_tensor()[0].to(torch.float32), image.affine.to(torch.float64)


class PrepareVolumed(mt.MapTransform):
    """Dictionary transform that applies :class:`VolumePreprocessor` to a loaded record.

    Produces a plain tensor ``image`` (1, X, Y, Z) in [0, 1] — (1, X, Y) when the
    preprocessor's grid is 2D — and, when present, an integer ``mask`` on the same grid;
    ``label`` becomes a tensor.
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
                record[keys.MASK] = self._prepare_mask(
                    image, record[keys.MASK], record.get(keys.CASE_ID)
                )
        if keys.LABEL in record:
            record[keys.LABEL] = torch.as_tensor(record[keys.LABEL], dtype=torch.float32)
        return record

    def _prepare_mask(self, image: MetaTensor, mask: MetaTensor, case_id: object) -> torch.Tensor:
        """The mask on the image's grid, then resampled like the image (nearest neighbour)."""
        try:
            aligned = mask_on_image_grid(
                mask.as_tensor()[0].numpy(),
                mask.affine.numpy(),
                tuple(image.shape[1:]),
                image.affine.numpy(),
            )
        except DataError as err:
            raise DataError(
                f"case {case_id}: mask geometry differs from image geometry: {err}"
            ) from err
        return self.preprocessor.resample_mask(torch.from_numpy(aligned).float(), image.affine)


def mask_on_image_grid(
    mask: np.ndarray,
    mask_affine: np.ndarray,
    image_shape: tuple[int, ...],
    image_affine: np.ndarray,
) -> np.ndarray:
    """The label map copied onto its image's voxel grid (zeros where it does not reach).

    The mask's voxels must sit on the image's grid (same spacing and orientation, axes in any
    order or direction, whole-voxel offsets) and inside it; it may cover only part of the
    image, like a DICOM SEG that omits empty frames. A 2D mask ``(X, Y)`` or image shape
    ``(X, Y)`` is taken as one slice, ``(X, Y, 1)``, as medimg reads radiographs.

    Raises:
        DataError: the mask's grid is not a sub-grid of the image's.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[..., np.newaxis]
    image_shape = tuple(image_shape) + (1,) * (3 - len(image_shape))
    return align_to_grid(
        mask,
        np.asarray(mask_affine, dtype=np.float64),
        image_shape[:3],
        np.asarray(image_affine, dtype=np.float64),
    )
