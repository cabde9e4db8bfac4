"""The input of an inference: the image as medimg reads it, and its DICOM source instances.

The volume comes from :func:`medimg.data.read_image` (the same reader as training). DICOM
results must reference the source instances, so the folder's headers are read again and
each instance is paired with its slice *by position* (not by file or index order: readers
and highdicom sort slices differently), checked against the affine read_image returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medimg.data.dicom_seg import is_seg_dataset
from medimg.data.errors import DataError
from medimg.data.image import NIFTI_SUFFIXES, read_image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
POSITION_TOLERANCE_MM = 0.01


@dataclass
class InputCase:
    """One image to run a model on.

    Attributes:
        volume: float32 (X, Y, Z) in native units.
        affine: float64 4x4 voxel→RAS.
        format: ``nifti`` or ``dicom``.
        meta: non-identifying facts from the reader (modality, spacing, orientation...).
        sources: DICOM source instances in slice order (index k = volume[..., k]); empty
            for NIfTI input.
    """

    volume: torch.Tensor
    affine: torch.Tensor
    format: str
    meta: dict[str, Any] = field(default_factory=dict)
    sources: list[Dataset] = field(default_factory=list)


def read_input(path: str | Path, repair_tilt: bool = False) -> InputCase:
    """Read a NIfTI file or a DICOM series folder for inference.

    Raises:
        DataError: unreadable input, several series, a DICOM SEG given as input, or
            instances that do not line up with the volume's slices (message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found (give a DICOM series folder or a NIfTI file)")
    image = read_image(path, repair_tilt=repair_tilt)
    if image.meta.get("format") == "dicom-seg":
        raise DataError(f"{path}: is a DICOM Segmentation, not an image to run a model on")
    array = np.asarray(image.array, dtype=np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a single-channel 3D image, got shape {array.shape}")
    case = InputCase(
        volume=torch.from_numpy(np.ascontiguousarray(array)),
        affine=torch.from_numpy(np.asarray(image.affine, dtype=np.float64)),
        format="nifti" if str(path).lower().endswith(NIFTI_SUFFIXES) else "dicom",
        meta={k: v for k, v in image.meta.items() if isinstance(v, (str, int, float, list))},
    )
    if case.format == "dicom":
        case.sources = source_instances(path, image.affine, array.shape)
    return case


def source_instances(path: Path, affine: np.ndarray, shape: tuple[int, ...]) -> list[Dataset]:
    """The series' instances (with pixel data) ordered like the volume's slices.

    Raises:
        DataError: multi-frame sources, or an instance whose position is not a slice of
            the volume (or two instances at one slice).
    """
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    datasets = []
    for file in files:
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" in ds and not is_seg_dataset(ds):  # read_image skips SEGs too
            datasets.append((file, ds))
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in datasets):
        raise DataError(f"{path}: multi-frame source images are not supported for DICOM results")
    if len(datasets) == 1 and shape[2] == 1 and "ImagePositionPatient" not in datasets[0][1]:
        return [datasets[0][1]]  # a projection image (DX, CR...): one image, no position
    origins = np.array([affine[:3, :3] @ [0.0, 0.0, k] + affine[:3, 3] for k in range(shape[2])])
    ordered: list[Dataset | None] = [None] * shape[2]
    for file, ds in datasets:
        if "ImagePositionPatient" not in ds:
            raise DataError(f"{file}: no ImagePositionPatient, cannot place it in the volume")
        ras = LPS_TO_RAS @ np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        distances = np.linalg.norm(origins - ras, axis=1)
        k = int(np.argmin(distances))
        if distances[k] > POSITION_TOLERANCE_MM or ordered[k] is not None:
            raise DataError(
                f"{file}: ImagePositionPatient {list(ds.ImagePositionPatient)} is not one slice "
                f"of the volume read from {path} (nearest slice {k}, {distances[k]:.3f} mm away)"
            )
        ordered[k] = ds
    missing = [k for k, ds in enumerate(ordered) if ds is None]
    if missing:
        raise DataError(f"{path}: no source instance for slices {missing[:5]} of the volume")
    return [ds for ds in ordered if ds is not None]
