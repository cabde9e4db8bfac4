"""Header-level geometry of a DICOM series: sorting slices along the normal and refusing broken stacks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import NoReturn

import numpy as np

from medimg.data.errors import DataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates (LPS) to NIfTI/MONAI world coordinates (RAS)."""

MIN_TOLERANCE_MM = 0.002
"""Floor of every position tolerance: DICOM DS values are often rounded to a few decimals."""

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between direction cosines of two slices that still counts as equal."""

PIXEL_SPACING_RTOL = 1e-4
"""Largest relative difference between two slices' PixelSpacing that still counts as equal."""

GAP_RATIO_TOLERANCE = 0.25
"""A step within this many typical steps of k × typical step (k >= 2) is a gap of k - 1 slices."""

_MAX_LISTED = 5


class GeometryError(DataError):
    """A DICOM series whose slices do not form one regular, orthogonal volume.

    Attributes:
        problem: The description of the problem without the source prefix (one line).
    """

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem if problem is not None else message

    def __reduce__(self) -> tuple[type[GeometryError], tuple[str, str]]:
        """Pickle with the problem text (errors cross process pools in the scanner)."""
        return type(self), (str(self), self.problem)


@dataclass(frozen=True)
class SliceHeader:
    """The geometry-relevant header fields of one slice (one file, or one frame of a file).

    Attributes:
        path: File the slice comes from. :func:`medimg.data.dicom.read_dicom_series` names a
            frame of a multi-frame file ``<file>#frame<n>`` (n from 1); other callers may
            give several frames the same path.
        series_uid: SeriesInstanceUID.
        position: ImagePositionPatient: centre of the first voxel, LPS mm.
        orientation: ImageOrientationPatient: row direction then column direction cosines.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm, i.e. the distance
            between rows then the distance between columns.
        rows: Rows.
        columns: Columns.
        instance_number: InstanceNumber (or the frame number of a multi-frame file), if known.
    """

    path: str
    series_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    instance_number: int | None = None


@dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """A checked series: slices in volume order and the voxel-to-world affine.

    Attributes:
        headers: The slices sorted by ascending projection of their position on the slice
            normal ``cross(row_dir, col_dir)``.
        affine: Read-only 4x4 float64 affine mapping voxel ``(i, j, k)`` = (column index,
            row index, sorted slice index) to RAS millimetres. Its third column is the slice
            normal times ``slice_spacing``, or for a repaired tilted stack the actual step
            between consecutive slice positions (a sheared affine).
        shape: ``(columns, rows, slices)``.
        slice_spacing: Mean distance between consecutive slice positions along the normal
            (not SliceThickness); for a single slice, the spacing the caller supplied.
        max_spacing_deviation: Largest difference between one step and ``slice_spacing``, mm.
        tilt_degrees: Gantry tilt kept in the affine as a shear (0 unless ``repair_tilt``
            accepted a tilted stack): the angle between the step and the slice normal.
    """

    headers: tuple[SliceHeader, ...]
    affine: np.ndarray
    shape: tuple[int, int, int]
    slice_spacing: float
    max_spacing_deviation: float
    tilt_degrees: float = 0.0


def sort_and_check(
    headers: Sequence[SliceHeader],
    source: str,
    tolerance: float = 0.01,
    *,
    single_slice_spacing: float = 1.0,
    repair_tilt: bool = False,
) -> SeriesGeometry:
    """Sort slices along the slice normal and check they form one regular, orthogonal volume.

    Checks, in this order, each raising on the first problem: one SeriesInstanceUID; equal
    Rows/Columns, PixelSpacing (relative difference <= ``PIXEL_SPACING_RTOL``) and
    ImageOrientationPatient (cosines within ``ORIENTATION_TOLERANCE``); no two slices at the
    same position along the normal; positions along the normal (no gantry tilt / shear); no
    missing slices; uniform steps.

    Position tolerances are fractions of a voxel: steps may differ from the mean step by at
    most ``tolerance`` × mean step, and positions may leave the line through the first slice
    along the normal by at most ``tolerance`` × the smaller pixel spacing (both never below
    ``MIN_TOLERANCE_MM``). Two slices closer than ``tolerance`` × typical step are duplicates.
    The typical step is the median step, or the smallest step when the median is itself about
    a multiple of it (most steps are gaps); a step within ``GAP_RATIO_TOLERANCE`` of k typical
    steps, k >= 2, is a gap of k - 1 missing slices, any other irregular step is non-uniform
    spacing. Gantry-tilted stacks are refused unless ``repair_tilt``: then a stack whose
    positions lie on one straight line off the normal (a constant tilt), with uniform steps
    and no gaps, is accepted and kept exactly as a sheared affine whose third column is the
    step between consecutive positions; no resampling is needed, since any consumer that
    inverts the full 3x3 affine (e.g. :class:`medimg.data.preprocess.VolumePreprocessor`)
    places it correctly.

    Args:
        headers: One header per slice, in any order.
        source: What the headers came from (a folder, a file); every error message starts
            with it.
        tolerance: Relative position tolerance, as a fraction of the voxel size (> 0).
        single_slice_spacing: Third affine column length (mm) for a single-slice series, where
            positions cannot give it (e.g. SpacingBetweenSlices or SliceThickness).
        repair_tilt: Accept a constant gantry tilt as a sheared affine instead of refusing it.

    Returns:
        The sorted headers, affine, shape and spacing.

    Raises:
        GeometryError: The headers do not form one volume; the message names ``source``, the
            files and the specifics (UIDs, gap location, deviation in mm, tilt angle). With
            ``repair_tilt``, a tilt that changes from slice to slice is still refused.
        ValueError: ``tolerance`` or ``single_slice_spacing`` is not positive.
    """
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    if not single_slice_spacing > 0:
        raise ValueError(f"single_slice_spacing must be > 0, got {single_slice_spacing!r}")
    try:
        return _check(list(headers), tolerance, single_slice_spacing, repair_tilt)
    except GeometryError as err:
        raise GeometryError(f"{source}: {err.problem}", err.problem) from None


def series_status(headers: Sequence[SliceHeader]) -> str:
    """Return ``'ok'`` or a one-line description of the first geometry problem of a series.

    Args:
        headers: One header per slice, in any order.

    Returns:
        ``'ok'`` when :func:`sort_and_check` accepts the headers, else its problem text
        (without a source prefix).
    """
    try:
        _check(list(headers), 0.01, 1.0)
    except GeometryError as err:
        return err.problem
    return "ok"


def _check(
    headers: list[SliceHeader], tolerance: float, single_spacing: float, repair_tilt: bool = False
) -> SeriesGeometry:
    """Run every check and build the geometry; raise GeometryError with a bare problem text."""
    if not headers:
        _fail("no slices")
    _check_one_series(headers)
    for field in _FIELDS:
        _check_same(headers, field)
    row_dir, col_dir = _directions(headers[0])
    normal = np.cross(row_dir, col_dir)
    positions = _positions(headers)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    ordered = tuple(headers[i] for i in order)
    positions, along = positions[order], along[order]
    row_sp, col_sp = (float(v) for v in ordered[0].pixel_spacing)
    tilt = 0.0
    if len(ordered) == 1:
        spacing, deviation = float(single_spacing), 0.0
        step = normal * spacing
    else:
        steps = np.diff(along)
        typical = _check_duplicates(ordered, along, steps, tolerance)
        in_plane = max(tolerance * min(row_sp, col_sp), MIN_TOLERANCE_MM)
        axes = (row_dir, col_dir, normal)
        tilted = _check_tilt(ordered, positions, along, axes, in_plane, refuse=not repair_tilt)
        _check_gaps(ordered, along, steps, typical)
        spacing = float(along[-1] - along[0]) / (len(ordered) - 1)
        deviation = float(np.max(np.abs(steps - spacing)))
        _check_uniform(ordered, along, steps, spacing, deviation, tolerance)
        step = normal * spacing
        if tilted:
            step, tilt = _sheared_step(ordered, positions, axes, in_plane)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_sp
    lps[:3, 1] = col_dir * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps + 0.0
    affine.setflags(write=False)
    shape = (int(ordered[0].columns), int(ordered[0].rows), len(ordered))
    return SeriesGeometry(ordered, affine, shape, spacing, deviation, tilt)


def _positions(headers: list[SliceHeader]) -> np.ndarray:
    """Slice positions as an (n, 3) array; refuse malformed positions and pixel spacings."""
    for header in headers:
        if len(header.position) != 3 or not all(math.isfinite(v) for v in header.position):
            _fail(
                f"{_name(header)}: ImagePositionPatient must be 3 finite numbers, got {header.position}"
            )
    spacing = headers[0].pixel_spacing
    if len(spacing) != 2 or not all(float(v) > 0 for v in spacing):
        _fail(f"{_name(headers[0])}: PixelSpacing must be 2 positive numbers, got {spacing}")
    return np.array([h.position for h in headers], dtype=np.float64)


def _fail(problem: str) -> NoReturn:
    """Raise a GeometryError carrying ``problem`` (the caller adds the source)."""
    raise GeometryError(problem, problem)


def _name(header: SliceHeader) -> str:
    """Short name of a slice's file for messages."""
    name = PurePath(header.path).name or header.path
    return name if header.instance_number is None else f"{name} (instance {header.instance_number})"


def _names(headers: Sequence[SliceHeader]) -> str:
    """Up to a few file names, then how many more."""
    shown = ", ".join(_name(h) for h in headers[:_MAX_LISTED])
    more = len(headers) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _check_one_series(headers: list[SliceHeader]) -> None:
    """Refuse headers from several SeriesInstanceUIDs, listing every UID and its file count."""
    counts = Counter(h.series_uid for h in headers)
    if len(counts) > 1:
        listed = "; ".join(f"{uid} ({n} slices)" for uid, n in counts.most_common())
        _fail(
            f"{len(counts)} series mixed together (SeriesInstanceUID {listed}); "
            "read one series at a time"
        )


def _same_size(a: SliceHeader, b: SliceHeader) -> bool:
    """Equal Rows and Columns."""
    return (a.rows, a.columns) == (b.rows, b.columns)


def _same_spacing(a: SliceHeader, b: SliceHeader) -> bool:
    """PixelSpacing equal within ``PIXEL_SPACING_RTOL``."""
    return np.allclose(a.pixel_spacing, b.pixel_spacing, rtol=PIXEL_SPACING_RTOL, atol=0.0)


def _same_orientation(a: SliceHeader, b: SliceHeader) -> bool:
    """ImageOrientationPatient cosines equal within ``ORIENTATION_TOLERANCE``."""
    return np.allclose(a.orientation, b.orientation, rtol=0.0, atol=ORIENTATION_TOLERANCE)


def _floats(values: Sequence[float]) -> str:
    """A short list of numbers."""
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


_FIELDS: dict[str, tuple[Callable[[SliceHeader, SliceHeader], bool], Callable]] = {
    "image size (Rows x Columns)": (_same_size, lambda h: f"{h.rows}x{h.columns}"),
    "PixelSpacing": (_same_spacing, lambda h: _floats(h.pixel_spacing)),
    "ImageOrientationPatient": (_same_orientation, lambda h: _floats(h.orientation)),
}


def _check_same(headers: list[SliceHeader], field: str) -> None:
    """Refuse slices whose ``field`` differs from the majority's, naming the odd files."""
    same, show = _FIELDS[field]
    groups: list[list[SliceHeader]] = []
    for header in headers:
        group = next((g for g in groups if same(g[0], header)), None)
        if group is None:
            groups.append([header])
        else:
            group.append(header)
    if len(groups) == 1:
        return
    majority = max(groups, key=len)
    odd = [h for group in groups if group is not majority for h in group]
    reference = majority[0]
    extra = ""
    if field == "ImageOrientationPatient":
        extra = f", rotated {_rotation_degrees(reference, odd[0]):.2f}°,"
    _fail(
        f"inconsistent {field} between slices: {_names(odd)} has {show(odd[0])}{extra} "
        f"but the other {len(majority)} slice(s) (e.g. {_name(reference)}) have {show(reference)}"
    )


def _directions(header: SliceHeader) -> tuple[np.ndarray, np.ndarray]:
    """Unit row and column directions of a slice; refuse a malformed orientation."""
    iop = np.asarray(header.orientation, dtype=np.float64)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        _fail(
            f"{_name(header)}: ImageOrientationPatient must be 6 numbers, got {header.orientation}"
        )
    row_dir, col_dir = iop[:3], iop[3:]
    norms = (np.linalg.norm(row_dir), np.linalg.norm(col_dir))
    if min(norms) < 0.9 or max(norms) > 1.1 or abs(row_dir @ col_dir) > 1e-2 * norms[0] * norms[1]:
        _fail(
            f"{_name(header)}: ImageOrientationPatient {_floats(iop)} is not two orthogonal "
            "unit vectors"
        )
    row_dir = row_dir / norms[0]
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    return row_dir, col_dir / np.linalg.norm(col_dir)


def _rotation_degrees(a: SliceHeader, b: SliceHeader) -> float:
    """Angle of the rotation taking slice ``a``'s orientation to slice ``b``'s, in degrees."""
    try:
        frames = [np.column_stack([*d, np.cross(*d)]) for d in (_directions(a), _directions(b))]
    except GeometryError:
        return float("nan")
    relative = frames[1] @ frames[0].T
    cos = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return math.degrees(math.acos(cos))


def _step_tolerance(typical: float, tolerance: float) -> float:
    """Allowed step error in mm for a typical step."""
    return max(tolerance * abs(typical), MIN_TOLERANCE_MM)


def _check_duplicates(
    ordered: tuple[SliceHeader, ...], along: np.ndarray, steps: np.ndarray, tolerance: float
) -> float:
    """Refuse slices at the same position along the normal; return the typical (median) step."""
    distinct = steps[steps > MIN_TOLERANCE_MM]
    typical = _typical_step(distinct)
    duplicate = np.flatnonzero(steps <= _step_tolerance(typical, tolerance))
    if duplicate.size:
        k = int(duplicate[0])
        _fail(
            f"duplicate slice positions: {len(duplicate)} pair(s) of slices at the same position "
            f"along the normal, first {_name(ordered[k])} and {_name(ordered[k + 1])} at "
            f"{_mm(along[k])} mm (several acquisitions, phases or echoes in one series?)"
        )
    return typical


def _typical_step(steps: np.ndarray) -> float:
    """The median step, or the smallest when the median is itself a multiple of it (gaps galore)."""
    if not steps.size:
        return 0.0
    median, smallest = float(np.median(steps)), float(steps.min())
    ratio = median / smallest
    if round(ratio) >= 2 and abs(ratio - round(ratio)) <= GAP_RATIO_TOLERANCE:
        return smallest
    return median


def _mm(value: float) -> str:
    """A length in mm with three decimals, never ``-0.000``."""
    return f"{round(float(value), 3) + 0.0:.3f}"


def _check_tilt(
    ordered: tuple[SliceHeader, ...],
    positions: np.ndarray,
    along: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    allowed: float,
    refuse: bool = True,
) -> bool:
    """Refuse (or, unless ``refuse``, report) positions over ``allowed`` mm off the normal line.

    Returns:
        True when the stack is tilted or sheared and ``refuse`` is False; False when it is not.
    """
    row_dir, col_dir, normal = axes
    offsets = positions - positions[0]
    offsets -= np.outer(along - along[0], normal)
    distance = np.linalg.norm(offsets, axis=1)
    worst = int(np.argmax(distance))
    if distance[worst] <= allowed:
        return False
    if not refuse:
        return True
    angle = math.degrees(math.atan2(distance[worst], abs(along[worst] - along[0])))
    shift_row, shift_col = offsets[worst] @ row_dir, offsets[worst] @ col_dir
    _fail(
        f"slice positions are not along the slice normal: gantry tilt or sheared stack of "
        f"{angle:.2f}° ({_name(ordered[worst])} is offset {_mm(distance[worst])} mm in-plane: "
        f"{_mm(shift_row)} mm along rows, {_mm(shift_col)} mm along columns, from "
        f"{_name(ordered[0])}); tilted stacks are refused (no resampling to an orthogonal grid; "
        "repair_tilt=True keeps a constant tilt as a sheared affine)"
    )


def _sheared_step(
    ordered: tuple[SliceHeader, ...],
    positions: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    allowed: float,
) -> tuple[np.ndarray, float]:
    """Step vector (LPS mm) and tilt angle of a constant tilt; refuse positions off one line.

    Runs after the gap and uniform-step checks, so steps along the normal are already regular;
    what is left is that the in-plane offset grows by the same amount at every slice.
    """
    row_dir, col_dir, normal = axes
    n = len(ordered)
    step = (positions[-1] - positions[0]) / (n - 1)
    off_line = positions - (positions[0] + np.outer(np.arange(n), step))
    off_line -= np.outer(off_line @ normal, normal)  # steps along the normal were checked
    distance = np.linalg.norm(off_line, axis=1)
    worst = int(np.argmax(distance))
    if distance[worst] > allowed:
        off = off_line[worst]
        _fail(
            f"slice positions are not on one straight line: the in-plane offset between slices "
            f"is not constant, so the stack is not one gantry tilt ({_name(ordered[worst])} is "
            f"{_mm(distance[worst])} mm in-plane from the line through the first and last slice: "
            f"{_mm(off @ row_dir)} mm along rows, {_mm(off @ col_dir)} mm along columns); "
            "such stacks are refused even with repair_tilt"
        )
    along = float(step @ normal)
    shear = float(np.linalg.norm(step - along * normal))
    return step, math.degrees(math.atan2(shear, along))


def _check_gaps(
    ordered: tuple[SliceHeader, ...], along: np.ndarray, steps: np.ndarray, typical: float
) -> None:
    """Refuse steps of about k >= 2 typical steps, saying where and how many slices are missing."""
    ratio = steps / typical
    k = np.rint(ratio)
    gaps = np.flatnonzero((k >= 2) & (np.abs(ratio - k) <= GAP_RATIO_TOLERANCE))
    if not gaps.size:
        return
    missing = int(np.sum(k[gaps] - 1))
    described = "; ".join(
        f"{int(k[g]) - 1} missing after slice {g} ({_name(ordered[g])} at {_mm(along[g])} mm) "
        f"before slice {g + 1} ({_name(ordered[g + 1])} at {_mm(along[g + 1])} mm), "
        f"gap {steps[g]:.3f} mm"
        for g in gaps[:_MAX_LISTED]
    )
    more = f"; and {gaps.size - _MAX_LISTED} more gap(s)" if gaps.size > _MAX_LISTED else ""
    _fail(
        f"missing slices: {missing} slice(s) missing in {gaps.size} gap(s) "
        f"(typical step {typical:.3f} mm, positions along the normal): {described}{more}"
    )


def _check_uniform(
    ordered: tuple[SliceHeader, ...],
    along: np.ndarray,
    steps: np.ndarray,
    spacing: float,
    deviation: float,
    tolerance: float,
) -> None:
    """Refuse steps that differ from the mean step by more than the tolerance."""
    allowed = _step_tolerance(spacing, tolerance)
    if deviation <= allowed:
        return
    worst = int(np.argmax(np.abs(steps - spacing)))
    _fail(
        f"non-uniform slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
        f"(mean {spacing:.3f} mm), max deviation {deviation:.3f} mm (tolerance {allowed:.3f} mm) "
        f"between slice {worst} ({_name(ordered[worst])} at {_mm(along[worst])} mm) and slice "
        f"{worst + 1} ({_name(ordered[worst + 1])} at {_mm(along[worst + 1])} mm)"
    )


def affine_axis_codes(affine: np.ndarray) -> str:
    """Where each voxel axis points, as RAS letters (nibabel's ``aff2axcodes`` at a fraction of the cost)."""
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    codes = []
    for column in np.asarray(affine, dtype=np.float64)[:3, :3].T:
        axis = int(np.argmax(np.abs(column)))
        codes.append(letters[axis][int(column[axis] > 0)])
    return "".join(codes)
