"""Reading a DICOM Segmentation (SEG) object into an integer label map placed in world space."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel.orientations as nio
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medimg.data.errors import DataError
from medimg.data.geometry import LPS_TO_RAS

logger = logging.getLogger(__name__)

SEG_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}
"""SOP classes read as label maps, by SOPClassUID."""

FRACTIONAL_THRESHOLD = 0.5
"""A FRACTIONAL segment covers a voxel whose value (rescaled to [0, 1]) is at least this."""

_HEADER_TAGS = ["SOPClassUID", "Modality"]
_READ_ERRORS = (
    InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
)


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file whose header makes it a Segmentation.

    Reads only SOPClassUID and Modality (no pixel data): a SEG SOP class, or Modality ``SEG``.
    A file that is missing or not DICOM gives False.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except _READ_ERRORS:
        return False
    return is_seg_dataset(ds)


def is_seg_dataset(ds: pydicom.Dataset) -> bool:
    """True when a dataset's SOPClassUID or Modality makes it a Segmentation."""
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES or ds.get("Modality") == "SEG"


def read_dicom_seg(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a DICOM SEG into a label map with its voxel-to-RAS affine.

    The frames are placed by their own plane positions (highdicom's ``get_volume``), never by
    frame index, so the label map sits where its source series sits in world space. The array
    uses medimg's DICOM layout: ``(columns, rows, slices)`` with slices ascending along
    ``cross(row_dir, col_dir)``, exactly as :func:`medimg.data.dicom.read_dicom_series`
    returns the source series; when the SEG holds a frame for every source slice the two
    grids are identical. Writers may omit empty frames (highdicom does by default): then the
    grid spans only the first to the last stored frame (``meta["n_slices"]`` is smaller than
    ``meta["referenced_instances"]``); :func:`align_to_grid` puts it back on the source grid.

    Voxel values are segment numbers (0 background). BINARY and LABELMAP segments are used as
    stored; a FRACTIONAL segment covers a voxel whose value is at least
    :data:`FRACTIONAL_THRESHOLD` of MaximumFractionalValue. Overlapping segments are refused
    rather than resolved, since one label map cannot hold both and dropping one silently
    would corrupt training targets.

    Args:
        path: The SEG file.

    Returns:
        ``(array, affine, meta)``: the label map (uint8, or uint16 above segment 255), its 4x4
        float64 voxel-to-RAS affine, and ``meta`` with ``format`` ("dicom-seg"), ``segments``
        ({number: label}), ``segmentation_type``, ``modality``, ``shape``, ``dtype``,
        ``spacing``, ``orientation``, ``n_slices``, ``referenced_instances`` and, for
        FRACTIONAL SEGs, ``fractional_threshold``.

    Raises:
        DataError: The file is unreadable or not a SEG, it has no segments, its frames do not
            form one regular volume, or segments overlap (the message names the file).
    """
    import highdicom as hd  # imported here: it adds ~0.2 s to every import of medimg.data

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DICOM SEG file not found")
    try:
        seg = hd.seg.segread(path)
    except _READ_ERRORS as err:
        raise DataError(f"{path}: unreadable DICOM Segmentation ({err})") from err
    numbers = sorted(int(n) for n in seg.get_segment_numbers())
    if not numbers:
        raise DataError(f"{path}: DICOM Segmentation has no segments (SegmentSequence is empty)")
    try:
        volume = seg.get_volume(
            combine_segments=False, segment_numbers=numbers, allow_missing_positions=True
        )
    except (RuntimeError, ValueError, KeyError, AttributeError) as err:
        raise DataError(f"{path}: DICOM SEG frames do not form one regular volume ({err})") from err
    kind = str(seg.SegmentationType)
    covered = volume.array >= FRACTIONAL_THRESHOLD if kind == "FRACTIONAL" else volume.array > 0
    labels = _combine(path, seg, covered, numbers)
    array, lps = _medimg_layout(labels, np.asarray(volume.affine, dtype=np.float64))
    affine = LPS_TO_RAS @ lps + 0.0
    meta = {
        "format": "dicom-seg",
        "segments": {n: str(seg.get_segment_description(n).segment_label) for n in numbers},
        "segmentation_type": kind,
        "modality": "SEG",
        "shape": [int(v) for v in array.shape],
        "dtype": str(array.dtype),
        "spacing": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "orientation": "".join(str(c) for c in nio.aff2axcodes(affine)),
        "n_slices": int(array.shape[2]),
        "referenced_instances": _referenced_instances(seg),
    }
    if kind == "FRACTIONAL":
        meta["fractional_threshold"] = FRACTIONAL_THRESHOLD
    return array, affine, meta


def _combine(
    path: Path, seg: pydicom.Dataset, covered: np.ndarray, numbers: Sequence[int]
) -> np.ndarray:
    """One label map from per-segment masks (..., segments); refuse overlapping segments."""
    counts = covered.sum(axis=-1)
    overlap = counts > 1
    if overlap.any():
        first = np.argwhere(overlap)[0]
        both = [numbers[i] for i in np.flatnonzero(covered[tuple(first)])]
        names = ", ".join(f"{n} ({seg.get_segment_description(n).segment_label!r})" for n in both)
        raise DataError(
            f"{path}: segments overlap in {int(overlap.sum())} voxel(s) (e.g. segments {names}); "
            "a label map holds one segment per voxel: write overlapping structures as "
            "separate masks"
        )
    dtype = np.uint8 if max(numbers) <= np.iinfo(np.uint8).max else np.uint16
    labels = np.zeros(covered.shape[:-1], dtype=dtype)
    for index, number in enumerate(numbers):
        labels[covered[..., index]] = number
    return labels


def _medimg_layout(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn highdicom's (slices, rows, columns) and its LPS affine into medimg's layout.

    medimg's layout is (columns, rows, slices) with slices ascending along the slice normal.
    """
    array = labels.transpose(2, 1, 0)
    lps = affine[:, [2, 1, 0, 3]].copy()
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if float(lps[:3, 2] @ normal) < 0:
        array = array[:, :, ::-1]
        lps[:3, 3] += (array.shape[2] - 1) * lps[:3, 2]
        lps[:3, 2] *= -1.0
    return np.ascontiguousarray(array), lps


def _referenced_instances(seg: pydicom.Dataset) -> int:
    """How many source instances the SEG references (ReferencedSeriesSequence)."""
    return sum(
        len(series.get("ReferencedInstanceSequence", []))
        for series in seg.get("ReferencedSeriesSequence", [])
    )


def align_to_grid(
    labels: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    target_affine: np.ndarray,
    tolerance_mm: float = 0.01,
) -> np.ndarray:
    """Copy a label map onto a larger grid that holds its voxel centres, without resampling.

    For a SEG whose empty frames were omitted: its grid is a sub-grid of the source series'
    grid (same axes and spacing, whole-voxel offsets), so the labels fit into a zero array of
    the source's shape, which then shares the source's affine. Axes may be permuted or flipped
    between the two grids.

    Args:
        labels: The label map; the first three axes are spatial.
        affine: Its voxel-to-RAS affine.
        shape: Spatial shape of the target grid.
        target_affine: Voxel-to-RAS affine of the target grid.
        tolerance_mm: Largest world distance between a label voxel centre and the target voxel
            centre it lands on.

    Returns:
        The labels on the target grid (zeros elsewhere), same dtype.

    Raises:
        DataError: The label grid is not a sub-grid of the target (other orientation or
            spacing, a fractional offset, or voxels outside the target).
    """
    mapping = np.linalg.inv(np.asarray(target_affine, dtype=np.float64)) @ affine
    landed = np.eye(4)
    landed[:3, :3], landed[:3, 3] = np.rint(mapping[:3, :3]), np.rint(mapping[:3, 3])
    turn = landed[:3, :3]
    permutation = np.all(np.abs(turn).sum(axis=0) == 1) and np.all(np.abs(turn).sum(axis=1) == 1)
    axes = [[0.0, n - 1.0] for n in labels.shape[:3]]
    corners = np.vstack([np.stack(np.meshgrid(*axes)).reshape(3, -1), np.ones(8)])
    error = float(np.abs(affine @ corners - target_affine @ landed @ corners).max())
    if not permutation or error > tolerance_mm:
        raise DataError(
            f"label grid {list(labels.shape[:3])} is not a sub-grid of the target grid "
            f"{list(shape[:3])}: voxel centres up to {error:.3f} mm off the target's (other "
            "orientation or spacing, or a fractional shift)"
        )
    order = [int(np.flatnonzero(turn[axis])[0]) for axis in range(3)]
    moved = labels.transpose(*order, *range(3, labels.ndim))
    flips = tuple(axis for axis in range(3) if turn[axis, order[axis]] < 0)
    moved = np.flip(moved, axis=flips) if flips else moved
    start = np.rint((landed @ corners).min(axis=1)[:3]).astype(int)
    end = start + np.array(moved.shape[:3])
    if np.any(start < 0) or np.any(end > np.asarray(shape[:3])):
        raise DataError(
            f"label voxels fall outside the target grid (indices {start.tolist()} to "
            f"{(end - 1).tolist()}, target shape {list(shape[:3])})"
        )
    out = np.zeros((*shape[:3], *moved.shape[3:]), dtype=labels.dtype)
    out[start[0] : end[0], start[1] : end[1], start[2] : end[2]] = moved
    return out
