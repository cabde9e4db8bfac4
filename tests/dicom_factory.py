"""Test helper that writes synthetic CT-like DICOM series (single- and multi-frame) with fault knobs."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

Vector = tuple[float, float, float]
Orientation = str | tuple[Vector, Vector]

_NAMED: dict[str, tuple[Vector, Vector]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class WrittenSeries:
    """What a writer wrote and what a correct reader must return.

    Attributes:
        paths: Files in the order they were written.
        affine: Expected voxel-to-RAS affine for the array ``(columns, rows, slices)`` with
            slices ascending along ``cross(row_dir, col_dir)``.
        stored: Stored values shaped ``(columns, rows, slices)``, ascending slice order.
        series_uids: SeriesInstanceUIDs written, main series first.
    """

    paths: list[Path]
    affine: np.ndarray
    stored: np.ndarray
    series_uids: tuple[str, ...]

    def expected(self, slope: float = 1.0, intercept: float = -1024.0) -> np.ndarray:
        """The float32 array a reader must return for a MONOCHROME2 series."""
        return (self.stored.astype(np.float64) * slope + intercept).astype(np.float32)


def rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    """3x3 rotation matrix about ``axis`` by ``degrees`` (right-hand rule)."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    t = np.radians(degrees)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) * np.cos(t) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(a, a)


def directions(orientation: Orientation) -> tuple[np.ndarray, np.ndarray]:
    """Row and column unit vectors for a named orientation or an explicit pair.

    ``'oblique'`` is axial rotated 20° about x, then 20° about z.
    """
    if isinstance(orientation, str):
        if orientation == "oblique":
            turn = rotation((0, 0, 1), 20.0) @ rotation((1, 0, 0), 20.0)
            return turn @ np.array([1.0, 0, 0]), turn @ np.array([0, 1.0, 0])
        row, col = _NAMED[orientation]
    else:
        row, col = orientation
    return np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)


def ds_string(value: float) -> str:
    """A DICOM DS string of at most 16 characters keeping 10 significant digits."""
    value = float(value) + 0.0
    text = f"{0.0 if abs(value) < 1e-12 else value:.10g}"
    if len(text) > 16:  # pragma: no cover - only for extreme magnitudes
        text = f"{value:.8g}"
    return text


def default_values(shape: tuple[int, int, int]) -> np.ndarray:
    """A unique stored value per voxel, shaped ``(columns, rows, slices)`` (fits int16)."""
    cols, rows, n = shape
    ids = np.arange(cols * rows * n, dtype=np.int64).reshape(n, rows, cols).transpose(2, 1, 0)
    return (ids * 7 + 11) % 32749  # a permutation: 7 is invertible modulo the prime 32749


def write_series(
    folder: str | Path,
    shape: tuple[int, int, int] = (12, 10, 7),
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    orientation: Orientation = "axial",
    descending: bool = False,
    values: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    photometric: str = "MONOCHROME2",
    *,
    origin: Vector = (-10.5, 20.25, 30.0),
    bits_stored: int = 16,
    drop: Sequence[int] = (),
    jitter: tuple[int, float] | None = None,
    tilt_degrees: float = 0.0,
    rotate_slice: tuple[int, float] | None = None,
    pixel_spacing_of: tuple[int, tuple[float, float]] | None = None,
    second_series: Sequence[int] = (),
    duplicate: int | None = None,
    slice_thickness: float | None = None,
) -> WrittenSeries:
    """Write one CT-like DICOM file per slice (explicit VR little endian).

    Slice ``k`` (ascending along the normal) lies at ``origin + k * slice_spacing * normal``.
    ``spacing`` is ``(row spacing, column spacing, slice spacing)``, i.e. PixelSpacing then the
    step. Files are named ``0000.dcm``... in writing order, which is descending along the
    normal when ``descending``; InstanceNumber follows the writing order.

    Fault knobs (indices are ascending slice indices): ``drop`` leaves slices out; ``jitter``
    moves one slice along the normal by some mm; ``tilt_degrees`` shears the stack along the
    column direction (gantry tilt); ``rotate_slice`` turns one slice's orientation about the
    normal by some degrees; ``pixel_spacing_of`` gives one slice another PixelSpacing;
    ``second_series`` gives some slices another SeriesInstanceUID; ``duplicate`` puts a
    slice at the previous slice's position.

    Returns:
        The written files, the expected affine and the stored values.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cols, rows, n = shape
    stored = default_values(shape) if values is None else np.asarray(values)
    row_dir, col_dir = directions(orientation)
    normal = np.cross(row_dir, col_dir)
    offsets = np.arange(n, dtype=np.float64) * spacing[2]
    if jitter is not None:
        offsets[jitter[0]] += jitter[1]
    positions = np.asarray(origin) + offsets[:, None] * normal
    positions += np.tan(np.radians(tilt_degrees)) * offsets[:, None] * col_dir
    if duplicate is not None:
        positions[duplicate] = positions[duplicate - 1]
    base = _base_dataset(stored, photometric, bits_stored, slope, intercept)
    base.SOPClassUID = CTImageStorage
    base.file_meta.MediaStorageSOPClassUID = CTImageStorage
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.Rows, base.Columns = rows, cols
    base.SliceThickness = ds_string(spacing[2] if slice_thickness is None else slice_thickness)
    uids = (generate_uid(), generate_uid()) if second_series else (generate_uid(),)
    order = [k for k in (range(n - 1, -1, -1) if descending else range(n)) if k not in drop]
    paths = []
    for number, k in enumerate(order):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = uids[1] if k in second_series else uids[0]
        ds.InstanceNumber = number + 1
        ds.ImagePositionPatient = [ds_string(v) for v in positions[k]]
        ds.SliceLocation = ds_string(positions[k] @ normal)
        row_k, col_k = row_dir, col_dir
        if rotate_slice is not None and rotate_slice[0] == k:
            turn = rotation(normal, rotate_slice[1])
            row_k, col_k = turn @ row_dir, turn @ col_dir
        ds.ImageOrientationPatient = [ds_string(v) for v in (*row_k, *col_k)]
        pixel = spacing[:2]
        if pixel_spacing_of is not None and pixel_spacing_of[0] == k:
            pixel = pixel_spacing_of[1]
        ds.PixelSpacing = [ds_string(v) for v in pixel]
        ds.PixelData = _pixel_bytes(stored[:, :, k].T, ds)
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    affine = expected_affine(row_dir, col_dir, spacing, origin)
    return WrittenSeries(paths, affine, stored, uids)


def write_multiframe(
    path: str | Path,
    shape: tuple[int, int, int] = (12, 10, 7),
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    orientation: Orientation = "axial",
    descending: bool = False,
    values: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    *,
    origin: Vector = (-10.5, 20.25, 30.0),
) -> WrittenSeries:
    """Write an enhanced CT image (one file, one frame per slice) with per-frame plane positions.

    Shared functional groups hold PixelMeasures, PlaneOrientation and PixelValueTransformation;
    each frame's PlanePositionSequence holds its ImagePositionPatient. Frames are stored in
    descending order along the normal when ``descending``.

    Returns:
        The written file, the expected affine and the stored values (ascending slices).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols, rows, n = shape
    stored = default_values(shape) if values is None else np.asarray(values)
    row_dir, col_dir = directions(orientation)
    normal = np.cross(row_dir, col_dir)
    ds = _base_dataset(stored, "MONOCHROME2", 16, slope, intercept, rescale_in_root=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    measures = Dataset()
    measures.PixelSpacing = [ds_string(v) for v in spacing[:2]]
    measures.SliceThickness = ds_string(spacing[2])
    plane = Dataset()
    plane.ImageOrientationPatient = [ds_string(v) for v in (*row_dir, *col_dir)]
    transform = Dataset()
    transform.RescaleSlope = ds_string(slope)
    transform.RescaleIntercept = ds_string(intercept)
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    order = list(range(n - 1, -1, -1) if descending else range(n))
    frames = []
    for number, k in enumerate(order):
        position = Dataset()
        position.ImagePositionPatient = [
            ds_string(v) for v in np.asarray(origin) + k * spacing[2] * normal
        ]
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.FrameAcquisitionNumber = number + 1
        frame = Dataset()
        frame.PlanePositionSequence = DicomSequence([position])
        frame.FrameContentSequence = DicomSequence([content])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = _pixel_bytes(stored[:, :, order].transpose(2, 1, 0), ds)
    ds.save_as(path, enforce_file_format=True)
    affine = expected_affine(row_dir, col_dir, spacing, origin)
    return WrittenSeries([path], affine, stored, (str(ds.SeriesInstanceUID),))


def expected_affine(
    row_dir: np.ndarray, col_dir: np.ndarray, spacing: Sequence[float], origin: Sequence[float]
) -> np.ndarray:
    """Voxel-to-RAS affine for index (column, row, ascending slice)."""
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = np.cross(row_dir, col_dir) * spacing[2]
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def _base_dataset(
    stored: np.ndarray,
    photometric: str,
    bits_stored: int,
    slope: float,
    intercept: float,
    rescale_in_root: bool = True,
) -> Dataset:
    """Dataset with the patient/study/series and pixel-format attributes shared by every file."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.StudyInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "CT"
    ds.Manufacturer = "MEDIMG-TEST"
    ds.PatientName = "TEST^FACTORY"
    ds.PatientID = "FACTORY01"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    signed = bool(np.min(stored) < 0)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if rescale_in_root:
        ds.RescaleSlope = ds_string(slope)
        ds.RescaleIntercept = ds_string(intercept)
        ds.RescaleType = "HU"
    return ds


def _pixel_bytes(array: np.ndarray, ds: Dataset) -> bytes:
    """Little-endian 16-bit pixel bytes of ``array`` (rows, columns) or (frames, rows, columns)."""
    dtype = "<i2" if ds.PixelRepresentation else "<u2"
    limits = np.iinfo(dtype)
    if array.min() < limits.min or array.max() > limits.max:
        raise ValueError(f"values must fit {np.dtype(dtype)}, got {array.min()}..{array.max()}")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
