"""Reading one DICOM series (folder, file list or multi-frame file) into a float32 volume and RAS affine."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from medimg.data.dicom_seg import is_seg_dataset
from medimg.data.errors import DataError
from medimg.data.geometry import LPS_TO_RAS, SliceHeader, affine_axis_codes, sort_and_check

logger = logging.getLogger(__name__)

DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pillow, or pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.51": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.80": "pyjpegls, or pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.81": "pyjpegls, or pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg, or pillow, or python-gdcm",
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg, or pillow, or python-gdcm",
    "1.2.840.10008.1.2.4.201": "pylibjpeg + pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg + pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg + pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle (pydicom's own RLE decoder needs numpy)",
}
"""pip packages that give pydicom a decoder, by compressed transfer syntax UID."""

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFAULT_SPACING = "default 1 mm"
_NATIVE_SYNTAXES = (UID("1.2.840.10008.1.2"), UID("1.2.840.10008.1.2.1"))
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, KeyError, OSError, EOFError)


def read_dicom_series(
    paths: Sequence[str | Path] | str | Path,
    repair_tilt: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one DICOM series into a float32 volume with its voxel-to-RAS affine.

    ``paths`` is a folder (every file directly in it; files that are not DICOM images, such
    as a DICOMDIR, a README, a presentation state or a DICOM SEG, are skipped; sub-folders
    are ignored), a list of files (each must be a DICOM image, not a SEG), or one file (a
    single slice, an enhanced multi-frame image, or a 2D projection image; a SEG file is
    refused: read it with :func:`medimg.data.image.read_image`). The files are read once each
    (``pydicom.dcmread``), their geometry is checked by
    :func:`medimg.data.geometry.sort_and_check` (several series, missing slices, tilt and
    so on are refused; tilt is kept as a sheared affine when ``repair_tilt``), and the pixels
    are stacked in the sorted order.

    Intensities: stored values, MONOCHROME1 inverted first so that larger means brighter
    (``min + max - value`` over the range the stored bits allow, e.g. ``4095 - value`` for 12
    unsigned bits), then RescaleSlope/RescaleIntercept applied per slice (per frame for
    enhanced images). The result is always float32.

    Geometry: the array is shaped ``(columns, rows, slices)`` (Fortran-ordered), so voxel
    ``(i, j, k)`` is column ``i``, row ``j`` of the ``k``-th slice along the slice normal
    ``cross(row_dir, col_dir)``; the affine maps it to RAS mm. A single slice gets a third
    affine column of SpacingBetweenSlices, else SliceThickness, else 1 mm
    (``meta["slice_spacing_source"]`` says which). An image without ImagePositionPatient /
    ImageOrientationPatient (CR, DX, MG...) is read as a ``(columns, rows, 1)`` volume whose
    rows run along +x (patient left) and columns along +y (posterior) in LPS, i.e. as if seen
    axially, with PixelSpacing, else ImagerPixelSpacing, else 1 mm, the origin at 0, and
    ``meta["geometry"] == "2d-projection"``; PatientOrientation is not used.

    Args:
        paths: A folder, one file, or a list of files of one series.
        repair_tilt: Accept a gantry-tilted (sheared) but otherwise regular stack: the affine's
            third column is then the actual step between consecutive slice positions, and
            ``meta["geometry_repair"]`` says so with the tilt angle. No resampling.

    Returns:
        ``(array, affine, meta)``: the float32 volume, a 4x4 float64 voxel-to-RAS affine, and
        non-identifying facts (no UIDs, patient fields or paths): ``geometry`` ("3d",
        "single-slice" or "2d-projection"), ``modality``, ``manufacturer``, ``shape``,
        ``n_slices``, ``pixel_spacing`` (row, column), ``slice_spacing``,
        ``slice_spacing_source``, ``max_spacing_deviation``, ``orientation`` (axis codes
        such as "LPS"), ``photometric``, ``inverted``, ``rescale_applied``,
        ``rescale_slope``/``rescale_intercept`` (None when they vary), ``rescale_type``,
        ``transfer_syntax``, ``multiframe`` and, for a repaired tilted stack,
        ``geometry_repair``.

    Raises:
        DataError: Missing path, no DICOM image, unreadable file, missing or malformed
            geometry field, colour image, or no installed decoder for the transfer syntax
            (the message names the file, the transfer syntax and the packages to install).
        medimg.data.geometry.GeometryError: The slices do not form one regular volume.
    """
    files, source, from_folder = _resolve(paths)
    images = _read_images(files, source, from_folder)
    if not any(_has_geometry(ds) for _, ds in images):
        return _read_projection(images, source)
    headers, frame_of = _slice_headers(images)
    single_spacing, spacing_source = 1.0, "positions"
    if len(headers) == 1:
        single_spacing, spacing_source = _single_slice_spacing(images[0][1])
    geometry = sort_and_check(
        headers, source, single_slice_spacing=single_spacing, repair_tilt=repair_tilt
    )
    stack, intensity = _stack_pixels(geometry.headers, frame_of, images)
    volume = stack.transpose(2, 1, 0)
    affine = np.array(geometry.affine, dtype=np.float64)
    meta = _common_meta(images, volume, affine, intensity)
    meta.update(
        geometry="3d" if len(headers) > 1 else "single-slice",
        pixel_spacing=[float(v) for v in geometry.headers[0].pixel_spacing],
        slice_spacing=geometry.slice_spacing,
        slice_spacing_source=spacing_source,
        max_spacing_deviation=geometry.max_spacing_deviation,
        multiframe=len(headers) > len(images),
    )
    if geometry.tilt_degrees:
        meta["geometry_repair"] = (
            f"gantry tilt {geometry.tilt_degrees:.2f}° kept as a sheared affine"
        )
    return volume, affine, meta


def _resolve(paths: Sequence[str | Path] | str | Path) -> tuple[list[Path], str, bool]:
    """Files to read, the source name for messages, and whether they came from a folder."""
    if isinstance(paths, (str, Path)):
        path = Path(paths)
        if path.is_dir():
            with os.scandir(path) as entries:
                files = sorted(Path(e.path) for e in entries if e.is_file())
            return files, str(path), True
        if path.is_file():
            return [path], str(path), False
        raise DataError(f"{path}: no such DICOM file or folder")
    files = [Path(p) for p in paths]
    if not files:
        raise DataError("empty list of DICOM files")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"DICOM file(s) not found: {', '.join(missing[:5])}")
    folders = {f.parent for f in files}
    where = str(files[0].parent) if len(folders) == 1 else os.path.commonpath(files)
    return files, f"{where} ({len(files)} listed files)", False


def _read_images(files: list[Path], source: str, from_folder: bool) -> list[tuple[Path, Dataset]]:
    """Read every file once; skip (folder) or refuse (list) files that are not DICOM images."""
    images = []
    skipped = segs = 0
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as err:
            if not from_folder:
                raise DataError(f"{path}: not a DICOM file ({err})") from err
            skipped += 1
            continue
        except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: unreadable DICOM file ({err})") from err
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            if not from_folder:
                raise DataError(f"{path}: DICOM file has no pixel data (not an image)")
            skipped += 1
            continue
        if is_seg_dataset(ds):
            if not from_folder:
                raise DataError(
                    f"{path}: DICOM Segmentation (SEG), not an image of a series; read it on "
                    "its own with medimg.data.image.read_image"
                )
            segs += 1
            continue
        images.append((path, ds))
    if skipped or segs:
        logger.debug(
            "%s: skipped %d file(s) that are not DICOM images and %d SEG(s)", source, skipped, segs
        )
    if not images:
        hint = f"; {segs} DICOM SEG file(s): read a SEG file on its own" if segs else ""
        raise DataError(
            f"{source}: no DICOM images in folder ({len(files)} file(s), none a DICOM image "
            f"with pixel data; sub-folders are not read{hint})"
        )
    return images


def _has_geometry(ds: Dataset) -> bool:
    """True when a dataset places its slices in space (IPP, or functional groups)."""
    return "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds


def _text(item: Dataset, keyword: str) -> str | None:
    """Value of a string-VR element (DS, IS, CS, UI) as text, or None when absent or empty.

    Reads the raw bytes when pydicom has not converted the element yet: these VRs are ASCII,
    and skipping pydicom's per-element conversion keeps header reading cheap.
    """
    element = item.get_item(tag_for_keyword(keyword))
    if element is None or element.value is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace").strip(" \x00")
    elif isinstance(value, str):
        text = value.strip(" \x00")
    elif isinstance(value, Sequence):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text or None


def _numbers(path: str, item: Dataset, keyword: str, count: int) -> tuple[float, ...]:
    """A multi-valued numeric attribute as floats; DataError naming file and field if bad."""
    text = _text(item, keyword)
    if text is None:
        raise DataError(f"{path}: {keyword} is missing")
    try:
        numbers = tuple(float(v) for v in text.split("\\"))
    except ValueError as err:
        raise DataError(f"{path}: {keyword} is not numeric: {text!r}") from err
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{path}: {keyword} must be {count} finite numbers, got {text!r}")
    return numbers


def _number(item: Dataset, keyword: str, default: float) -> float:
    """A single numeric attribute as float, or ``default`` when absent or not a number."""
    text = _text(item, keyword)
    try:
        return default if text is None else float(text.split("\\")[0])
    except ValueError:
        return default


def _integer(path: str, ds: Dataset, keyword: str) -> int:
    """A required positive integer attribute; DataError naming file and field if bad."""
    value = ds.get(keyword)
    if not isinstance(value, int) or value < 1:
        raise DataError(f"{path}: {keyword} must be a positive integer, got {value!r}")
    return value


def _instance_number(ds: Dataset) -> int | None:
    """InstanceNumber as an int, or None."""
    number = _number(ds, "InstanceNumber", math.nan)
    return int(number) if math.isfinite(number) else None


def _slice_headers(
    images: list[tuple[Path, Dataset]],
) -> tuple[list[SliceHeader], dict[int, tuple[int, int | None]]]:
    """One SliceHeader per slice or frame, and where each one's pixels are (image, frame)."""
    headers: list[SliceHeader] = []
    frame_of: dict[int, tuple[int, int | None]] = {}
    with_ipp = sum(_has_geometry(ds) for _, ds in images)
    for index, (path, ds) in enumerate(images):
        if not _has_geometry(ds):
            raise DataError(
                f"{path}: no ImagePositionPatient while {with_ipp} other image(s) of the "
                "series have one"
            )
        if "PerFrameFunctionalGroupsSequence" in ds:
            frames = _frame_headers(path, ds)
            for frame, header in enumerate(frames):
                frame_of[id(header)] = (index, frame)
            headers.extend(frames)
            continue
        if _n_frames(ds) > 1:
            raise DataError(
                f"{path}: multi-frame image ({_n_frames(ds)} frames) without per-frame plane "
                "positions (PerFrameFunctionalGroupsSequence) is not supported"
            )
        header = _header(str(path), ds, ds, ds, _instance_number(ds))
        frame_of[id(header)] = (index, None)
        headers.append(header)
    return headers, frame_of


def _n_frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent or empty); a value that is not a whole number is refused."""
    value = ds.get("NumberOfFrames")
    try:
        return int(value or 1)
    except (TypeError, ValueError) as err:
        name = getattr(ds, "filename", None) or "DICOM file"
        raise DataError(
            f"{name}: NumberOfFrames (0028,0008) is {value!r}, not a whole number"
        ) from err


def _header(
    name: str,
    ds: Dataset,
    plane: Dataset,
    measures: Dataset,
    instance: int | None,
    orientation: Dataset | None = None,
) -> SliceHeader:
    """Build a SliceHeader from the datasets holding position, orientation and spacing."""
    return SliceHeader(
        path=name,
        series_uid=_text(ds, "SeriesInstanceUID") or "",
        position=_numbers(name, plane, "ImagePositionPatient", 3),
        orientation=_numbers(name, orientation or plane, "ImageOrientationPatient", 6),
        pixel_spacing=_numbers(name, measures, "PixelSpacing", 2),
        rows=_integer(name, ds, "Rows"),
        columns=_integer(name, ds, "Columns"),
        instance_number=instance,
    )


def _group(frame: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    """The item of a functional group macro: per-frame first, then shared."""
    for groups in (frame, shared):
        if groups is not None and sequence in groups and len(groups[sequence].value):
            return groups[sequence].value[0]
    return None


def _frame_headers(path: Path, ds: Dataset) -> list[SliceHeader]:
    """One SliceHeader per frame of an enhanced multi-frame image (functional groups)."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if len(per_frame) != _n_frames(ds):
        raise DataError(
            f"{path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items but "
            f"NumberOfFrames is {_n_frames(ds)}"
        )
    headers = []
    for number, frame in enumerate(per_frame, start=1):
        name = f"{path}#frame{number}"
        groups = {}
        for sequence in (
            "PlanePositionSequence",
            "PlaneOrientationSequence",
            "PixelMeasuresSequence",
        ):
            groups[sequence] = _group(frame, shared, sequence)
            if groups[sequence] is None:
                raise DataError(f"{name}: {sequence} is missing (per-frame and shared)")
        headers.append(
            _header(
                name,
                ds,
                groups["PlanePositionSequence"],
                groups["PixelMeasuresSequence"],
                None,
                groups["PlaneOrientationSequence"],
            )
        )
    return headers


def _single_slice_spacing(ds: Dataset) -> tuple[float, str]:
    """Third-axis spacing of a single slice: SpacingBetweenSlices, SliceThickness or 1 mm."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    measures = _group(None, shared[0], "PixelMeasuresSequence") if shared else None
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        for item in (ds, measures):
            value = math.nan if item is None else _number(item, keyword, math.nan)
            if value > 0:
                return value, keyword
    return 1.0, _DEFAULT_SPACING


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    """Stored pixel values of a dataset, shaped (frames, rows, columns)."""
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise DataError(
            f"{path}: colour images are not supported (SamplesPerPixel "
            f"{ds.get('SamplesPerPixel')}, PhotometricInterpretation "
            f"{ds.get('PhotometricInterpretation')})"
        )
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    native = _native_pixels(ds, syntax)
    if native is not None:
        return native
    try:
        array = ds.pixel_array
    except _DECODE_ERRORS as err:
        raise _decode_error(path, syntax, err) from err
    return array.reshape(-1, array.shape[-2], array.shape[-1])


def _native_pixels(ds: Dataset, syntax: UID | None) -> np.ndarray | None:
    """Uncompressed little-endian integer pixels read straight from the buffer, else None.

    Gives what ``ds.pixel_array`` gives for these files (unused high bits masked, or
    sign-extended for signed data) without its per-call set-up cost; every other encoding goes
    through pydicom's pixel handlers.
    """
    if syntax not in _NATIVE_SYNTAXES or "PixelData" not in ds:
        return None
    allocated, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    rows, columns, frames = ds.get("Rows"), ds.get("Columns"), _n_frames(ds)
    if allocated not in (8, 16, 32) or not isinstance(stored, int) or not 0 < stored <= allocated:
        return None
    if not isinstance(rows, int) or not isinstance(columns, int):
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    buffer = ds.PixelData
    count = frames * rows * columns
    if len(buffer) < count * dtype.itemsize:
        return None
    array = np.frombuffer(buffer, dtype=dtype, count=count).reshape(frames, rows, columns)
    if stored < allocated:
        shift = allocated - stored
        array = np.right_shift(np.left_shift(array, shift), shift)
    return array


def _decode_error(path: Path, syntax: UID | None, err: Exception) -> DataError:
    """DataError for pixel data pydicom could not decode, naming the packages that would."""
    if syntax is None:
        return DataError(f"{path}: cannot decode pixel data (no TransferSyntaxUID): {err}")
    name = f"'{syntax.name}' ({syntax})"
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        return DataError(f"{path}: pydicom has no decoder for transfer syntax {name}")
    packages = DECODER_PACKAGES.get(str(syntax))
    if not available and packages:
        return DataError(
            f"{path}: no decoder installed for transfer syntax {name}; install one of: {packages}"
        )
    detail = " ".join(str(err).split())
    return DataError(f"{path}: cannot decode pixel data with transfer syntax {name}: {detail}")


def _rescale(ds: Dataset, frame: Dataset | None, shared: Dataset | None) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept for a slice or frame (identity when absent)."""
    item = _group(frame, shared, "PixelValueTransformationSequence") or ds
    return _number(item, "RescaleSlope", 1.0), _number(item, "RescaleIntercept", 0.0)


def _inversion_offset(ds: Dataset) -> float:
    """``min + max`` of the stored range, for MONOCHROME1 inversion."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -1.0
    return float(2**bits - 1)


def _stack_pixels(
    headers: Sequence[SliceHeader],
    frame_of: dict[int, tuple[int, int | None]],
    images: list[tuple[Path, Dataset]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decoded, inverted and rescaled slices stacked as float32 (slices, rows, columns).

    MONOCHROME1 inversion and rescale fold into one linear map per slice,
    ``(offset - v) * slope + intercept = v * -slope + (offset * slope + intercept)``, applied
    while the slice is converted to float32.
    """
    n, rows, columns = len(headers), headers[0].rows, headers[0].columns
    stack = np.empty((n, rows, columns), dtype=np.float32)
    slopes, intercepts = np.ones(n), np.zeros(n)
    inverted = np.zeros(n, dtype=bool)
    decoded: dict[int, np.ndarray] = {}
    for k, header in enumerate(headers):
        index, frame = frame_of[id(header)]
        path, ds = images[index]
        if index not in decoded:
            decoded[index] = _decode(path, ds)
        pixels = decoded[index][frame or 0]
        if frame is None:
            decoded.pop(index)
            if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
                raise DataError(f"{path}: ModalityLUTSequence (table rescale) is not supported")
            slopes[k], intercepts[k] = _rescale(ds, None, None)
        else:
            shared = ds.get("SharedFunctionalGroupsSequence")
            per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
            slopes[k], intercepts[k] = _rescale(ds, per_frame, shared[0] if shared else None)
        scale, shift = slopes[k], intercepts[k]
        if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
            inverted[k] = True
            scale, shift = -scale, shift + _inversion_offset(ds) * scale
        _to_float(pixels, scale, shift, stack[k])
    uniform = bool(np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]))
    return stack, {
        "inverted": bool(inverted.any()),
        "rescale_applied": bool(np.any(slopes != 1.0) or np.any(intercepts != 0.0)),
        "rescale_slope": float(slopes[0]) if uniform else None,
        "rescale_intercept": float(intercepts[0]) if uniform else None,
    }


def _to_float(pixels: np.ndarray, scale: float, shift: float, out: np.ndarray) -> None:
    """Write ``pixels * scale + shift`` into the float32 slice ``out``."""
    if scale == 1.0:
        if shift == 0.0:
            out[...] = pixels
        else:
            np.add(pixels, np.float32(shift), out=out, dtype=np.float32)
        return
    np.multiply(pixels, np.float32(scale), out=out, dtype=np.float32)
    if shift != 0.0:
        out += np.float32(shift)


def _common_meta(
    images: list[tuple[Path, Dataset]],
    volume: np.ndarray,
    affine: np.ndarray,
    intensity: dict[str, Any],
) -> dict[str, Any]:
    """Non-identifying acquisition facts shared by 3D and projection reads."""
    first = images[0][1]
    syntaxes = sorted(
        {
            ds.file_meta.TransferSyntaxUID.name
            for _, ds in images
            if "TransferSyntaxUID" in getattr(ds, "file_meta", Dataset())
        }
    )
    photometric = sorted({_text(ds, "PhotometricInterpretation") or "" for _, ds in images})
    return {
        "modality": str(first.get("Modality", "")),
        "manufacturer": str(first.get("Manufacturer", "")),
        "shape": [int(v) for v in volume.shape],
        "n_slices": int(volume.shape[2]),
        "orientation": affine_axis_codes(affine),
        "photometric": ", ".join(photometric),
        "rescale_type": _rescale_type(first),
        "transfer_syntax": ", ".join(syntaxes),
        **intensity,
    }


def _rescale_type(ds: Dataset) -> str:
    """RescaleType (units after rescale, e.g. HU) from the root or shared functional groups."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    item = _group(None, shared[0], "PixelValueTransformationSequence") if shared else None
    return str((item or ds).get("RescaleType", "") or ds.get("RescaleType", ""))


def _read_projection(
    images: list[tuple[Path, Dataset]], source: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one image without patient geometry as a (columns, rows, 1) volume."""
    if len(images) > 1:
        raise DataError(
            f"{source}: {len(images)} images without ImagePositionPatient (projection "
            "radiographs?) cannot be stacked into a volume; read them one file at a time"
        )
    path, ds = images[0]
    if _n_frames(ds) > 1:
        raise DataError(
            f"{path}: multi-frame image ({_n_frames(ds)} frames) without "
            "ImagePositionPatient/ImageOrientationPatient is not supported"
        )
    spacing, spacing_source = (1.0, 1.0), _DEFAULT_SPACING
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(keyword) not in (None, ""):
            spacing, spacing_source = _numbers(str(path), ds, keyword, 2), keyword
            break
    rows, columns = _integer(str(path), ds, "Rows"), _integer(str(path), ds, "Columns")
    header = SliceHeader(str(path), "", (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), spacing, rows, columns)
    stack, intensity = _stack_pixels([header], {id(header): (0, None)}, images)
    volume = stack.transpose(2, 1, 0)
    affine = LPS_TO_RAS @ np.diag([spacing[1], spacing[0], 1.0, 1.0]) + 0.0
    meta = _common_meta(images, volume, affine, intensity)
    meta.update(
        geometry="2d-projection",
        pixel_spacing=[float(v) for v in spacing],
        pixel_spacing_source=spacing_source,
        slice_spacing=1.0,
        slice_spacing_source=_DEFAULT_SPACING,
        max_spacing_deviation=0.0,
        multiframe=False,
    )
    return volume, affine, meta
