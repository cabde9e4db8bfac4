"""A MONAI ``ImageReader`` backed by medimg's strict DICOM/NIfTI reader, for ``LoadImaged``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from medimg.data.image import Image, read_image

SUFFIXES = (".nii", ".nii.gz", ".dcm")


class MedimgReader(ImageReader):
    """Reads NIfTI files and DICOM series (folder or file list) through :func:`read_image`.

    Unlike MONAI's ``PydicomReader`` it sorts slices along the slice normal, takes spacing from
    positions, and refuses folders with several series or broken geometry, naming the file.
    A DICOM SEG file is read as a label map aligned with its source series.

    Args:
        repair_tilt: Keep gantry-tilted DICOM series as a sheared affine instead of refusing
            them (see :func:`medimg.data.image.read_image`).
    """

    def __init__(self, repair_tilt: bool = False) -> None:
        super().__init__()
        self.repair_tilt = repair_tilt

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        names = [str(f) for f in ensure_tuple(filename)]
        return all(
            Path(n).is_dir() or n.lower().endswith(SUFFIXES) or "." not in Path(n).name
            for n in names
        )

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Image:
        names = ensure_tuple(data)
        return read_image(
            names[0] if len(names) == 1 else list(names), repair_tilt=self.repair_tilt
        )

    def get_data(self, img: Image) -> tuple[np.ndarray, dict]:
        """The array with three spatial axes and its meta (affine, spatial shape).

        A 2D NIfTI (a label map drawn on a radiograph) gets a third axis of one voxel, so it is
        ``(X, Y, 1)`` with a 4x4 affine exactly like the radiograph medimg reads from DICOM.
        """
        array = img.array[..., np.newaxis] if img.array.ndim == 2 else img.array
        meta = {k: v for k, v in img.meta.items() if isinstance(v, (int, float, str, bool))}
        meta.update(
            affine=img.affine.copy(),
            original_affine=img.affine.copy(),
            spatial_shape=np.asarray(array.shape[:3]),
            original_channel_dim="no_channel",
        )
        return array, meta
