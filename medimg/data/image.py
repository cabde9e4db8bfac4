"""One entry point reading NIfTI, a DICOM series or a DICOM SEG into an array, affine and meta."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medimg.data.dicom import read_dicom_series
from medimg.data.dicom_seg import is_dicom_seg, read_dicom_seg
from medimg.data.errors import DataError
from medimg.data.geometry import affine_axis_codes

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Image:
    """A volume with its geometry.

    Attributes:
        array: Voxel values; the first three axes are spatial (i, j, k).
        affine: 4x4 float64 affine mapping voxel ``(i, j, k)`` to RAS millimetres.
        meta: Non-identifying facts about the source (format, spacing, orientation...).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def read_image(path: Sequence[str | Path] | str | Path, repair_tilt: bool = False) -> Image:
    """Read a NIfTI file, a DICOM series or a DICOM Segmentation (SEG).

    A path ending in ``.nii`` or ``.nii.gz`` is read with nibabel: the array keeps the stored
    axis order; integer data without intensity scaling (label maps, masks) keeps its stored
    integer type, anything else becomes float32 with ``scl_slope``/``scl_inter`` applied. The
    affine is nibabel's best affine: the sform when its code is set, else the qform, else
    nibabel's fallback from the voxel sizes (``meta["affine_source"]`` says which).
    A single DICOM file whose header says it is a Segmentation (SOPClassUID or Modality SEG)
    is read as a label map with :func:`medimg.data.dicom_seg.read_dicom_seg`. Anything else
    (a folder, a single file, or a list of files) is read as one DICOM series with
    :func:`medimg.data.dicom.read_dicom_series`.

    Args:
        path: A NIfTI file, a DICOM file or folder, a list of DICOM files, or a SEG file.
        repair_tilt: Keep a gantry-tilted DICOM series as a sheared affine instead of refusing
            it (see :func:`medimg.data.geometry.sort_and_check`); no effect on other inputs.

    Returns:
        The image; ``meta["format"]`` is ``"nifti"``, ``"dicom"`` or ``"dicom-seg"``.

    Raises:
        DataError: The path does not exist or cannot be read as an image (the message names
            it), the DICOM series is unusable (see ``read_dicom_series``), or the SEG is
            unusable (see ``read_dicom_seg``).
    """
    if isinstance(path, (str, Path)):
        if str(path).lower().endswith(NIFTI_SUFFIXES):
            return _read_nifti(Path(path))
        if Path(path).is_file() and is_dicom_seg(path):
            return Image(*read_dicom_seg(path))
    array, affine, meta = read_dicom_series(path, repair_tilt=repair_tilt)
    return Image(array=array, affine=affine, meta={"format": "dicom", **meta})


def _read_nifti(path: Path) -> Image:
    """Read a NIfTI file: stored integers for unscaled integer data, else float32."""
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    try:
        image = nib.load(str(path))
        header = image.header
        # nibabel moves scl_slope/scl_inter from the header into the array proxy on load.
        slope = float(getattr(image.dataobj, "slope", 1.0))
        inter = float(getattr(image.dataobj, "inter", 0.0))
        if np.issubdtype(header.get_data_dtype(), np.integer) and (slope, inter) == (1.0, 0.0):
            array = np.asanyarray(image.dataobj)
        else:
            array = image.get_fdata(dtype=np.float32)
    except (ImageFileError, OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: unreadable NIfTI file ({err})") from err
    affine = np.array(image.affine, dtype=np.float64)
    zooms = [float(z) for z in header.get_zooms()[:3]]
    meta = {
        "format": "nifti",
        "shape": [int(v) for v in array.shape],
        "dtype": str(array.dtype),
        "spacing": zooms,
        "orientation": affine_axis_codes(affine),
        "affine_source": _affine_source(header),
    }
    return Image(array=array, affine=affine, meta=meta)


def _affine_source(header: nib.Nifti1Header) -> str:
    """Which header field nibabel's best affine came from."""
    if int(header["sform_code"]) > 0:
        return "sform"
    if int(header["qform_code"]) > 0:
        return "qform"
    return "fallback"
