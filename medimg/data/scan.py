"""Header-only scan of a DICOM tree into one row per series, kept incremental by a JSON index."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import multiprocessing
import os
import struct
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medimg.data.dicom_header import as_floats, as_int, read_header_fast
from medimg.data.geometry import SliceHeader, series_status
from medimg.files import write_atomic

logger = logging.getLogger(__name__)

# The index name medimg before 0.2 wrote into the scanned tree; such a leftover is not scanned.
LEGACY_INDEX_NAME = ".medimg-scan.json"
INDEX_FORMAT = "medimg-scan-index/1"
SCAN_COLUMNS = (
    "patient_id",
    "study_uid",
    "series_uid",
    "modality",
    "manufacturer",
    "orientation",
    "n_files",
    "n_slices",
    "rows",
    "columns",
    "pixel_spacing",
    "slice_spacing",
    "status",
    "folder",
    "files",
)
OBLIQUE_DEGREES = 1.0
"""A direction further than this from every patient axis makes the orientation ``oblique``."""

_KEYWORDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Manufacturer",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "Rows",
    "Columns",
    "InstanceNumber",
    "NumberOfFrames",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
_TAG_OF = {keyword: tag_for_keyword(keyword) for keyword in _KEYWORDS}
_TAGS = list(_TAG_OF.values())  # ints: dcmread then skips a keyword lookup per tag and file
_VR_OF = {tag: dictionary_VR(tag) for tag in _TAGS}
_ASCII_VRS = {"UI", "CS", "DS", "IS"}  # plain ASCII by the standard, whatever the character set
_PIXEL_TAGS = {
    struct.pack(order + "HH", 0x7FE0, element)
    for order in "<>"
    for element in (0x0010, 0x0008, 0x0009)  # PixelData, FloatPixelData, DoubleFloatPixelData
}
_PLANE = (  # [position, orientation, pixel spacing]: (keyword, functional group, count)
    ("ImagePositionPatient", "PlanePositionSequence", 3),
    ("ImageOrientationPatient", "PlaneOrientationSequence", 6),
    ("PixelSpacing", "PixelMeasuresSequence", 2),
)
_PARSE_ERRORS = (
    InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    struct.error,
)
_INLINE_BELOW = 64  # fewer files than this are read in-process: a pool would cost more
_MAX_CHUNK = 256
_MAX_LISTED = 3
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) along LPS x, y, z


def scan_tree(
    root: str | Path, index_path: str | Path | None = None, workers: int = 2
) -> pd.DataFrame:
    """Scan a folder tree of DICOM files, reading headers only, into one row per series.

    A file is DICOM when ``DICM`` follows its 128-byte preamble; other files are skipped
    unparsed (pydicom's ``dcmread(force=False)``, which the series reader uses, refuses them
    too). With ``index_path``, the header fields of every file are kept in a JSON index keyed
    by the path relative to ``root``, with the file's size and ``mtime_ns``: a re-scan reads
    only new or changed files and drops removed ones.

    Args:
        root: Folder to scan, recursively (symlinked folders are not followed).
        index_path: Where the JSON index lives (where the caller says: the index holds the
            tree's headers and paths, protected health information, so it is never written
            into the scanned tree unasked). ``None``: no index; every header is read and nothing
            is written.
        workers: Processes reading headers (fork); 1 reads in this process.

    Returns:
        One row per SeriesInstanceUID with the columns :data:`SCAN_COLUMNS`, sorted by
        ``folder`` then ``series_uid``. Files without pixel data (SR, presentation states)
        count only for a series that has no image at all. ``status`` is ``'ok'`` or the
        problems joined by ``'; '``: the geometry verdict of
        :func:`medimg.data.geometry.series_status`, ``shares folder <f> with series <uids>``,
        unreadable DICOM files beside the series. ``folder`` (common parent) and ``files``
        (the folder when the series is alone in it, else the files joined by ``';'``) are
        relative to ``root``. ``frame.attrs['scan']`` counts the files seen, read, reused
        from the index and skipped as non-DICOM, lists the unreadable ones and gives seconds.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
        ValueError: ``workers`` is not an integer >= 1.
    """
    started = time.perf_counter()
    root = Path(root).resolve()
    if not root.exists():
        raise FileNotFoundError(f"{root}: scan root does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: scan root is not a folder")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    index_file = Path(index_path).resolve() if index_path is not None else None
    stats = _list_files(root, index_file)
    old = _load_index(index_file) if index_file is not None else {}
    entries = {rel: old[rel] for rel, stat in stats.items() if _unchanged(old.get(rel), stat)}
    stale = sorted(set(stats) - set(entries))
    for rel, header in zip(stale, _read_headers(str(root), stale, workers), strict=True):
        entries[rel] = {"size": stats[rel][0], "mtime_ns": stats[rel][1], "header": header}
    entries = dict(sorted(entries.items()))
    if index_file is not None and (stale or len(entries) != len(old)):
        _save_index(index_file, root, entries)
    frame = _series_table(entries)
    unreadable = [rel for rel, entry in entries.items() if _is_error(entry["header"])]
    frame.attrs["scan"] = {
        "root": str(root),
        "files": len(entries),
        "read": len(stale),
        "reused": len(entries) - len(stale),
        "skipped": sum(entry["header"] is None for entry in entries.values()),
        "unreadable": unreadable,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if unreadable:
        error = entries[unreadable[0]]["header"]["error"]
        logger.warning(
            "%s: %d DICOM file(s) could not be parsed, e.g. %s: %s",
            root,
            len(unreadable),
            unreadable[0],
            error,
        )
    logger.info(
        "%s: %d series (%d not ok) in %d files, %d read",
        root,
        len(frame),
        int((frame["status"] != "ok").sum()),
        len(entries),
        len(stale),
    )
    return frame


def write_scan(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a :func:`scan_tree` table as CSV, atomically; return the path written."""
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def axis_codes(orientation: Iterable[float]) -> str:
    """Axis codes of an ImageOrientationPatient, e.g. ``'LPS'`` for ``(1, 0, 0, 0, 1, 0)``.

    The letters say where the column index, the row index and the slice normal
    ``cross(row, column)`` point in LPS patient space (the reader's ``orientation``);
    ``'oblique'`` when one of them is more than :data:`OBLIQUE_DEGREES` from every axis,
    ``'invalid'`` when a direction is zero or not finite.
    """
    iop = np.asarray(list(orientation), dtype=np.float64)
    row, col = iop[:3], iop[3:6]
    letters = []
    for vector in (row, col, np.cross(row, col)):
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm < 1e-6:
            return "invalid"
        unit = vector / norm
        axis = int(np.argmax(np.abs(unit)))
        if abs(unit[axis]) < math.cos(math.radians(OBLIQUE_DEGREES)):
            return "oblique"
        letters.append(_AXIS_LETTERS[axis][int(unit[axis] > 0)])
    return "".join(letters)


# ---------------------------------------------------------------- the tree and the index


def _list_files(root: Path, index_file: Path | None) -> dict[str, tuple[int, int]]:
    """Relative POSIX path -> (size, mtime_ns) of every file under ``root`` but the index."""
    index_name = LEGACY_INDEX_NAME if index_file is None else index_file.name
    temporary = f".{index_name}."  # write_atomic's temporary files beside the index
    prefix = len(str(root)) + 1
    found: dict[str, tuple[int, int]] = {}
    pending = [str(root)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError as err:
            logger.warning("%s: folder skipped, it cannot be listed (%s)", folder, err)
            continue
        for item in items:
            if item.is_dir(follow_symlinks=False):
                pending.append(item.path)
            elif item.is_file() and item.path != str(index_file):
                if item.name.startswith(temporary) or item.name == LEGACY_INDEX_NAME:
                    continue
                try:
                    stat = item.stat()
                except OSError:  # removed since the folder was listed
                    continue
                found[item.path[prefix:].replace(os.sep, "/")] = (stat.st_size, stat.st_mtime_ns)
    return found


def _unchanged(entry: Any, stat: tuple[int, int]) -> bool:
    """True when an index entry is well formed and matches the file's size and mtime."""
    return (
        isinstance(entry, dict)
        and "header" in entry
        and (entry.get("size"), entry.get("mtime_ns")) == stat
    )


def _load_index(path: Path) -> dict[str, Any]:
    """Entries of an existing index; none when it is missing, unreadable or of another format."""
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        logger.warning("%s: scan index unreadable, rebuilding it (%s)", path, err)
        return {}
    if not isinstance(payload, dict) or payload.get("format") != INDEX_FORMAT:
        files = None
    else:
        files = payload.get("files")
    if not isinstance(files, dict):
        logger.warning("%s: scan index is not %s, rebuilding it", path, INDEX_FORMAT)
        return {}
    return files


def _save_index(path: Path, root: Path, entries: Mapping[str, Any]) -> None:
    """Write the index atomically (a failure raises: the caller asked for this index)."""
    text = json.dumps({"format": INDEX_FORMAT, "root": str(root), "files": entries})
    write_atomic(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------- reading headers


def _read_headers(root: str, rels: list[str], workers: int) -> list[dict[str, Any] | None]:
    """Header fields of each file, in order; a process pool over chunks when it pays off."""
    if workers == 1 or len(rels) < _INLINE_BELOW:
        return _read_chunk(root, rels)
    size = max(1, min(_MAX_CHUNK, math.ceil(len(rels) / (workers * 4))))
    chunks = [rels[i : i + size] for i in range(0, len(rels), size)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork") if "fork" in methods else None
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = pool.map(_read_chunk, [root] * len(chunks), chunks)
        return [header for chunk in results for header in chunk]


def _read_chunk(root: str, rels: list[str]) -> list[dict[str, Any] | None]:
    """Header fields of several files (runs in a worker process); pydicom's warnings muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom also logs them; one per odd file floods
        return [_read_header(os.path.join(root, rel)) for rel in rels]


def _read_header(path: str) -> dict[str, Any] | None:
    """Header fields of one file; None when it is not DICOM, ``{'error': ...}`` when broken."""
    fast = read_header_fast(path)  # plain little-endian files, same fields without pydicom
    if fast is not None:
        return fast
    try:
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                return None
            handle.seek(0)
            ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=_TAGS)
            # dcmread stops in front of the pixel data element, if there is one.
            fields = _fields(ds, image=handle.read(4) in _PIXEL_TAGS)
    except _PARSE_ERRORS as err:
        return {"error": f"{type(err).__name__}: {err}"}
    if not fields["image"] and fields["rows"] and fields["columns"]:
        if not _is_deflated(ds):  # pydicom reads a truncated file without complaint
            return {"error": "Rows and Columns but no pixel data: truncated file?"}
        fields["image"] = True  # a deflated stream cannot be peeked; Rows marks an image
    return fields


def _fields(ds: pydicom.Dataset, image: bool) -> dict[str, Any]:
    """Plain-JSON header fields of a dataset read with :data:`_TAGS`."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_items = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_items[0] if shared_items else None
    if per_frame:
        planes = [_plane(ds, frame, shared) for frame in per_frame]
    else:
        planes = [_plane(ds, None, None)]
    return {
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "image": image,
        "rows": as_int(_value(ds, "Rows")),
        "columns": as_int(_value(ds, "Columns")),
        "instance_number": as_int(_value(ds, "InstanceNumber")),
        "frames": as_int(_value(ds, "NumberOfFrames")) or 1,
        "per_frame": bool(per_frame),
        "planes": planes,
    }


def _plane(ds: pydicom.Dataset, frame: Any, shared: Any) -> list[list[float] | None]:
    """[position, orientation, pixel spacing] of a slice, or of a frame when ``frame`` is set."""
    if frame is not None:
        return [_group_value(frame, shared, seq, kw, n) for kw, seq, n in _PLANE]
    plane = [as_floats(_value(ds, keyword), count) for keyword, _, count in _PLANE]
    if plane[0] is None and plane[2] is None:
        plane[2] = as_floats(_value(ds, "ImagerPixelSpacing"), 2)  # projection radiograph
    return plane


def _group_value(frame: Any, shared: Any, sequence: str, keyword: str, count: int) -> Any:
    """A functional group value: from the frame's item of ``sequence``, else the shared one."""
    for groups in (frame, shared):
        items = groups.get(sequence) if groups is not None else None
        if items:
            return as_floats(items[0].get(keyword), count)
    return None


def _value(ds: pydicom.Dataset, keyword: str) -> Any:
    """A top-level value; ASCII and US ones decoded here from the raw bytes.

    pydicom's own conversion (with validation) costs ~10 µs per element, about as much as
    parsing the whole header of a small file.
    """
    tag = _TAG_OF[keyword]
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        vr = raw.VR or _VR_OF[tag]
        if vr in _ASCII_VRS:
            text = raw.value.decode("ascii", "replace").strip(" \0")
            return text.split("\\") if "\\" in text else text
        if vr == "US" and len(raw.value) == 2:
            return struct.unpack("<H" if raw.is_little_endian else ">H", raw.value)[0]
    return ds[tag].value if raw is not None else None


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """A string element, '' when absent or empty."""
    return str(_value(ds, keyword) or "").strip()


def _is_deflated(ds: pydicom.Dataset) -> bool:
    """True for the Deflated Explicit VR Little Endian transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian


def _is_error(header: dict[str, Any] | None) -> bool:
    """True for the index entry of a DICOM file that could not be parsed."""
    return header is not None and "error" in header


# ---------------------------------------------------------------- the series table


def _series_table(entries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per series from the per-file index entries (sorted by relative path)."""
    members: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    image_series: dict[str, set[str]] = defaultdict(set)  # folder -> series with images in it
    broken: Counter[str] = Counter()
    for rel, entry in entries.items():
        header = entry["header"]
        if _is_error(header):
            broken[_parent(rel)] += 1
        elif header is not None and header["series_uid"]:
            members[header["series_uid"]].append((rel, header))
            if header["image"]:
                image_series[_parent(rel)].add(header["series_uid"])
    rows = [_series_row(uid, files, image_series, broken) for uid, files in members.items()]
    frame = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    frame = frame.sort_values(["folder", "series_uid"], kind="stable", ignore_index=True)
    return frame.astype({"n_files": int, "n_slices": int, "rows": "Int64", "columns": "Int64"})


def _series_row(
    uid: str,
    files: list[tuple[str, dict[str, Any]]],
    image_series: Mapping[str, set[str]],
    broken: Mapping[str, int],
) -> dict[str, Any]:
    """The scan row of one series from its (relative path, header) pairs."""
    images = [(rel, header) for rel, header in files if header["image"]]
    used = images or files
    rels = [rel for rel, _ in used]
    headers = [header for _, header in used]
    folders = sorted({_parent(rel) for rel in rels})
    folder = os.path.commonpath(folders) or "."
    problems = [_geometry_status(images) if images else "no pixel data (not an image series)"]
    for key, keyword in (("patient_id", "PatientID"), ("study_uid", "StudyInstanceUID")):
        values = sorted({header[key] for header in headers})
        if len(values) > 1:
            problems.append(f"{keyword} differs between files: {_listed(values)}")
    for place in folders:
        others = sorted(image_series.get(place, set()) - {uid}) if images else []
        if others:
            problems.append(f"shares folder {place} with series {_listed(others)}")
        if broken.get(place):
            problems.append(f"folder {place} holds {broken[place]} unreadable DICOM file(s)")
    alone = len(folders) == 1 and image_series.get(folders[0], set()) <= {uid}
    planes = [plane for header in headers if header["image"] for plane in header["planes"]]
    orientation = next((plane[1] for plane in planes if plane[1] is not None), None)
    return {
        "patient_id": headers[0]["patient_id"],
        "study_uid": headers[0]["study_uid"],
        "series_uid": uid,
        "modality": _most_common(header["modality"] for header in headers),
        "manufacturer": _most_common(header["manufacturer"] for header in headers),
        "orientation": axis_codes(orientation) if orientation is not None else "",
        "n_files": len(used),
        "n_slices": sum(header["frames"] for header in headers if header["image"]),
        "rows": _single(header["rows"] for header in headers),
        "columns": _single(header["columns"] for header in headers),
        "pixel_spacing": _spacing_text({tuple(p[2]) for p in planes if p[2] is not None}),
        "slice_spacing": _slice_spacing([p[0] for p in planes if p[0] is not None], orientation),
        "status": "; ".join(p for p in problems if p != "ok") or "ok",
        "folder": folder,
        "files": folder if alone else ";".join(rels),
    }


def _geometry_status(images: list[tuple[str, dict[str, Any]]]) -> str:
    """``'ok'`` or the first problem stopping the image files from forming one volume."""
    slices: list[tuple[str, dict[str, Any], list[Any]]] = []
    for rel, header in images:
        frames, planes = header["frames"], header["planes"]
        if header["per_frame"] and len(planes) != frames:
            return (
                f"{rel}: PerFrameFunctionalGroupsSequence has {len(planes)} items but "
                f"NumberOfFrames is {frames}"
            )
        if not header["per_frame"] and frames > 1:
            return (
                f"{rel}: multi-frame image ({frames} frames) without per-frame plane positions "
                "(PerFrameFunctionalGroupsSequence) is not supported"
            )
        many = len(planes) > 1
        slices += [(f"{rel}#frame{k}" if many else rel, header, p) for k, p in enumerate(planes, 1)]
    if all(plane[0] is None for _, _, plane in slices):
        if len(slices) == 1:
            return "ok"  # one projection image (CR, DX, MG...): the reader takes it as it is
        return (
            f"{len(slices)} images without ImagePositionPatient (projection radiographs?) "
            "cannot be stacked into a volume"
        )
    for index, (keyword, _, _) in enumerate(_PLANE):
        lacking = [name for name, _, plane in slices if plane[index] is None]
        if lacking:
            return (
                f"{keyword} missing or malformed in {len(lacking)} of {len(slices)} "
                f"slice(s), e.g. {lacking[0]}"
            )
    for keyword in ("rows", "columns"):
        lacking = [name for name, header, _ in slices if not header[keyword]]
        if lacking:
            return f"{keyword.title()} missing in {len(lacking)} file(s), e.g. {lacking[0]}"
    return series_status(
        [
            SliceHeader(
                path=name,
                series_uid=header["series_uid"],
                position=tuple(plane[0]),
                orientation=tuple(plane[1]),
                pixel_spacing=tuple(plane[2]),
                rows=header["rows"],
                columns=header["columns"],
                instance_number=None if "#frame" in name else header["instance_number"],
            )
            for name, header, plane in slices
        ]
    )


def _slice_spacing(positions: list[list[float]], orientation: list[float] | None) -> float:
    """Median step between positions sorted along the slice normal; NaN for one slice."""
    if len(positions) < 2 or orientation is None:
        return math.nan
    normal = np.cross(orientation[:3], orientation[3:])
    depth = np.sort(np.asarray(positions, dtype=np.float64) @ normal)
    return round(float(np.median(np.diff(depth))), 6)


def _spacing_text(values: set[tuple[float, ...]]) -> str:
    """Pixel spacing as ``'row\\column'`` mm; ``'mixed'`` when slices differ, '' when absent."""
    if len(values) > 1:
        return "mixed"
    return "\\".join(f"{v:.10g}" for v in values.pop()) if values else ""


def _single(values: Iterable[int | None]) -> int | None:
    """The one value every file shares, or None when they differ or lack it."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _most_common(values: Iterable[str]) -> str:
    """The most common non-empty value (ties: the first seen), or ''."""
    counts = Counter(value for value in values if value)
    return counts.most_common(1)[0][0] if counts else ""


def _listed(values: list[str]) -> str:
    """Up to :data:`_MAX_LISTED` values, then how many more."""
    more = len(values) - _MAX_LISTED
    return ", ".join(values[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def _parent(rel: str) -> str:
    """Parent folder of a relative POSIX path (``'.'`` for the root)."""
    return rel.rpartition("/")[0] or "."
