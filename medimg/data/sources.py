"""Manifests from public dataset layouts: MSD, nnU-Net v2 raw, CSV, and DICOM series + labels."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.data.manifest import BASE_COLUMNS, read_manifest
from medimg.files import write_atomic

STUDY_UID = "study_uid"
SERIES_UID = "series_uid"
SERIES_FILES = "files"
SCAN_FOLDER = "folder"  # scan_tree's relative folder: the same as ``files`` for one-folder series
SERIES_COLUMNS = (keys.PATIENT_ID, STUDY_UID, SERIES_UID, SERIES_FILES)
DICOM_KEYS = (keys.PATIENT_ID, STUDY_UID, SERIES_UID)
_SHOWN = 10
_MAX_PROBLEMS = 50


def write_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as a manifest CSV without its index, atomically; return the path."""
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def manifest_from_csv(path: str | Path, columns: Sequence[str] = BASE_COLUMNS) -> pd.DataFrame:
    """Read a medimg manifest CSV, keeping every extra column.

    Args:
        path: the CSV file.
        columns: columns that must be present (default ``case_id, patient_id, image``).

    Returns:
        The table with ``image``/``mask`` resolved against the CSV's folder.

    Raises:
        DataError: see :func:`medimg.data.manifest.read_manifest`.
    """
    return read_manifest(path, columns)


def manifest_from_msd(dataset_json: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Manifest of the training cases of a Medical Segmentation Decathlon task.

    The MSD publishes no patient identifiers, so ``patient_id`` is the case id: splits are
    then by case, which is only leak-free if each patient contributes one case (the MSD's
    own assumption). The MSD ``label`` file is a segmentation and becomes the ``mask``
    column. ``frame.attrs`` holds ``labels`` ({int: name}) and ``channels`` ({int: name},
    from ``modality``); multi-channel MSD tasks keep all channels in one 4D ``image`` file.

    Args:
        dataset_json: the task's ``dataset.json``; image paths are relative to its folder.
        out: where to write the manifest CSV (atomically); None writes nothing.

    Returns:
        Columns ``case_id, patient_id, image, mask`` (absolute paths), one row per case.

    Raises:
        DataError: the json is missing or malformed, a listed file is missing, case ids
            repeat, or ``numTraining`` disagrees with ``training``.
    """
    path = Path(dataset_json)
    meta = _read_json(path)
    training = _field(meta, "training", list, path)
    labels = _int_keyed(_field(meta, "labels", dict, path), "labels", path)
    channels = _int_keyed(meta.get("modality", {}), "modality", path)
    root = path.parent.resolve()
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    for index, entry in enumerate(training):
        where = f"field 'training[{index}]'"
        if not (isinstance(entry, dict) and _is_text(entry.get("image"), entry.get("label"))):
            problems.append(f"{where}: expected {{'image': path, 'label': path}}, got {entry!r}")
            continue
        image, mask = root / entry["image"], root / entry["label"]
        for name, file in (("image", image), ("label", mask)):
            if not file.is_file():
                problems.append(f"{where}.{name}: file not found: {file}")
        case = _strip_ending(image.name)
        rows.append(
            {
                keys.CASE_ID: case,
                keys.PATIENT_ID: case,
                keys.IMAGE: str(image),
                keys.MASK: str(mask),
            }
        )
    problems += _repeated("case id", [row[keys.CASE_ID] for row in rows])
    problems += _count_mismatch(meta, len(training), "entries in 'training'")
    _raise_problems(path, problems)
    frame = pd.DataFrame(rows, columns=[keys.CASE_ID, keys.PATIENT_ID, keys.IMAGE, keys.MASK])
    frame.attrs.update(source="msd", labels=labels, channels=channels)
    return _finish(frame, out)


def manifest_from_nnunet(
    raw_dataset_folder: str | Path, out: str | Path | None = None
) -> pd.DataFrame:
    """Manifest of the training cases of an nnU-Net v2 raw dataset folder.

    Expects ``dataset.json`` (``channel_names``, ``labels``, ``file_ending``,
    ``numTraining``), ``imagesTr/<case>_<XXXX><file_ending>`` (one file per channel) and
    ``labelsTr/<case><file_ending>``. Channel 0 is the ``image`` column; further channels
    become ``image_1``, ``image_2``, … (medimg's datamodule reads ``image`` only, so a
    multi-channel model needs a datamodule that stacks them). nnU-Net has no patient ids:
    ``patient_id`` is the case id. ``frame.attrs`` holds ``labels`` (nnU-Net's
    {name: value}), ``channels`` ({int: name}) and ``file_ending``. Files without
    ``file_ending`` and hidden files (e.g. macOS ``._*`` debris) are ignored.

    Args:
        raw_dataset_folder: e.g. ``nnUNet_raw/Dataset002_Heart``.
        out: where to write the manifest CSV (atomically); None writes nothing.

    Returns:
        Columns ``case_id, patient_id, image, [image_1, …], mask`` (absolute paths).

    Raises:
        DataError: dataset.json is missing or malformed, a file is misnamed, a channel or
            label file is missing, a label has no images, or ``numTraining`` disagrees.
    """
    folder = Path(raw_dataset_folder).resolve()
    json_path = folder / "dataset.json"
    meta = _read_json(json_path)
    channels = _int_keyed(
        _field(meta, "channel_names", dict, json_path), "channel_names", json_path
    )
    labels = _field(meta, "labels", dict, json_path)
    ending = _field(meta, "file_ending", str, json_path)
    if sorted(channels) != list(range(len(channels))) or not channels:
        raise DataError(
            f"{json_path}: field 'channel_names' must have keys '0'..'{len(channels) - 1}', "
            f"got {sorted(channels)}"
        )
    cases, problems = _scan_channels(folder / "imagesTr", ending, len(channels))
    label_files = _scan_files(folder / "labelsTr", ending)
    problems += [
        f"labelsTr: no label file {case}{ending} for case '{case}'"
        for case in sorted(cases)
        if case not in label_files
    ]
    problems += [
        f"labelsTr/{file.name}: label without images (no imagesTr/{case}_0000{ending})"
        for case, file in sorted(label_files.items())
        if case not in cases
    ]
    problems += _count_mismatch(meta, len(cases), f"cases in {folder / 'imagesTr'}")
    _raise_problems(json_path, problems)
    rows = []
    for case in sorted(cases):
        row = {keys.CASE_ID: case, keys.PATIENT_ID: case, keys.IMAGE: str(cases[case][0])}
        row.update({f"{keys.IMAGE}_{k}": str(cases[case][k]) for k in range(1, len(channels))})
        rows.append({**row, keys.MASK: str(label_files[case])})
    frame = pd.DataFrame(rows)
    frame.attrs.update(source="nnunet", labels=labels, channels=channels, file_ending=ending)
    return _finish(frame, out)


def manifest_from_dicom_labels(
    series: str | Path | pd.DataFrame,
    labels: str | Path | pd.DataFrame,
    key: str,
    unlabelled: str = "error",
    root: str | Path | None = None,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """Join a per-series table of DICOM series with a labels table.

    Args:
        series: CSV or DataFrame with at least ``patient_id, study_uid, series_uid, files``
            (``files`` is the series folder, e.g. from :func:`medimg.data.scan.scan_tree`),
            which becomes the ``image`` column (a scan's relative ``folder`` column, the
            same folder, is dropped). An optional ``case_id`` column is kept,
            otherwise ``case_id`` is the series UID.
        labels: CSV or DataFrame with the ``key`` column and ``label`` and/or ``mask``
            (relative mask paths follow the CSV's folder) plus any attribute columns.
        key: ``patient_id``, ``study_uid`` or ``series_uid``; every series of a labelled
            patient (or study) gets that patient's (or study's) label.
        unlabelled: ``"error"`` refuses series without a label; ``"drop"`` leaves them out.
        root: folder that relative ``files`` are relative to; default the scan root in
            ``series.attrs["scan"]["root"]``, else the series CSV's folder, else the cwd.
        out: where to write the manifest CSV (atomically); None writes nothing.

    Returns:
        One row per labelled series: ``case_id, patient_id, study_uid, series_uid, image``,
        the label columns, then every other column of both tables.

    Raises:
        ValueError: ``key`` or ``unlabelled`` is not one of the allowed values.
        DataError: a table misses a column or has empty ids, a key repeats in the labels,
            labels match no series, series have no label (with ``unlabelled="error"``), a
            labelled series is a list of files rather than one folder (it shares its folder
            with another series), or a column present in both tables disagrees.
    """
    if key not in DICOM_KEYS:
        raise ValueError(f"key must be one of {list(DICOM_KEYS)}, got {key!r}")
    if unlabelled not in ("error", "drop"):
        raise ValueError(f"unlabelled must be 'error' or 'drop', got {unlabelled!r}")
    table, table_name = _series_side(series, root)
    marks, marks_name = _labels_side(labels, key)
    _refuse_unmatched(marks_name, key, marks[key], set(table[key]), f"in {table_name}")
    if unlabelled == "error":
        missing = table.loc[~table[key].isin(set(marks[key])), key]
        _refuse_unmatched(
            table_name, key, missing, set(), f"in {marks_name} (pass unlabelled='drop')"
        )
    _refuse_disagreements(table, marks, key, table_name, marks_name)
    lists = table.loc[table[key].isin(set(marks[key])) & table[keys.IMAGE].str.contains(";")]
    if len(lists):
        raise DataError(
            f"{table_name}: column '{SERIES_FILES}' lists files instead of one folder (the "
            f"series shares its folder with another series; move it to its own folder) for "
            f"series_uid {_preview(lists[SERIES_UID].tolist())}"
        )
    shared = [c for c in marks.columns if c in table.columns and c != key]
    frame = table.merge(marks.drop(columns=shared), on=key, how="inner", validate="many_to_one")
    first = [keys.CASE_ID, keys.PATIENT_ID, STUDY_UID, SERIES_UID, keys.IMAGE]
    first += [c for c in (keys.LABEL, keys.MASK) if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)
    frame.attrs.update(source="dicom", key=key)
    return _finish(frame, out)


def _series_side(
    series: str | Path | pd.DataFrame, root: str | Path | None
) -> tuple[pd.DataFrame, str]:
    """The series table with ``files`` as absolute ``image`` and a unique ``case_id``."""
    if root is None and isinstance(series, pd.DataFrame):
        root = series.attrs.get("scan", {}).get("root")
    table, name = _load_table(series, "series table", SERIES_COLUMNS, SERIES_COLUMNS, root)
    table = table.rename(columns={SERIES_FILES: keys.IMAGE})
    table = table.drop(columns=[SCAN_FOLDER], errors="ignore")
    if keys.CASE_ID not in table.columns:
        table.insert(0, keys.CASE_ID, table[SERIES_UID])
    _refuse_repeats(name, SERIES_UID, table[SERIES_UID])
    _refuse_repeats(name, keys.CASE_ID, table[keys.CASE_ID])
    return table, name


def _labels_side(labels: str | Path | pd.DataFrame, key: str) -> tuple[pd.DataFrame, str]:
    """The labels table, checked to hold ``label`` or ``mask`` and each key once."""
    marks, name = _load_table(labels, "labels table", (key,), (key,))
    if keys.LABEL not in marks.columns and keys.MASK not in marks.columns:
        raise DataError(f"{name}: needs a 'label' or 'mask' column; found {list(marks.columns)}")
    _refuse_repeats(name, key, marks[key])
    return marks, name


def _finish(frame: pd.DataFrame, out: str | Path | None) -> pd.DataFrame:
    """Write the manifest when ``out`` is given; return it."""
    if out is not None:
        write_manifest(frame, out)
    return frame


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def _field(meta: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    """``meta[name]``, checked to exist and be a ``kind``."""
    if name not in meta:
        raise DataError(f"{path}: field '{name}' is missing")
    if not isinstance(meta[name], kind):
        raise DataError(
            f"{path}: field '{name}' must be a {kind.__name__}, got {type(meta[name]).__name__}"
        )
    return meta[name]


def _int_keyed(mapping: object, name: str, path: Path) -> dict[int, str]:
    """``{"0": "CT"}`` as ``{0: "CT"}``, refusing non-integer keys or non-text names."""
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: field '{name}' must be a dict, got {type(mapping).__name__}")
    bad = [k for k, v in mapping.items() if not str(k).isdigit() or not isinstance(v, str)]
    if bad:
        raise DataError(
            f"{path}: field '{name}' must map integer keys to names, bad entries for keys {bad}"
        )
    return {int(k): v for k, v in mapping.items()}


def _is_text(*values: object) -> bool:
    """True when every value is a non-empty string."""
    return all(isinstance(v, str) and v for v in values)


def _strip_ending(name: str) -> str:
    """File name without its image extension (``.nii.gz`` counts as one)."""
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem


def _count_mismatch(meta: dict[str, Any], found: int, what: str) -> list[str]:
    """A problem when ``numTraining`` is present and differs from ``found``."""
    declared = meta.get("numTraining")
    if declared is None or declared == found:
        return []
    return [f"field 'numTraining': declares {declared!r}, but there are {found} {what}"]


def _scan_files(folder: Path, ending: str) -> dict[str, Path]:
    """``{name without ending: path}`` of the visible files in ``folder`` ending in ``ending``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return {
        p.name[: -len(ending)]: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(ending) and not p.name.startswith(".")
    }


def _scan_channels(
    folder: Path, ending: str, n_channels: int
) -> tuple[dict[str, dict[int, Path]], list[str]]:
    """``{case: {channel: path}}`` from ``<case>_<XXXX><ending>`` files, and the problems.

    A case that misses a channel is kept (and reported), so its label is not also reported.
    """
    pattern = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
    cases: dict[str, dict[int, Path]] = {}
    problems = []
    for stem, path in _scan_files(folder, ending).items():
        match = pattern.fullmatch(stem)
        if match is None:
            problems.append(f"imagesTr/{path.name}: not named <case>_<XXXX>{ending}")
        elif int(match["channel"]) >= n_channels:
            problems.append(
                f"imagesTr/{path.name}: channel {int(match['channel'])} is not in "
                f"'channel_names' (channels 0..{n_channels - 1})"
            )
        else:
            cases.setdefault(match["case"], {})[int(match["channel"])] = path
    for case, files in sorted(cases.items()):
        absent = [f"{case}_{k:04d}{ending}" for k in range(n_channels) if k not in files]
        if absent:
            problems.append(f"imagesTr: case '{case}' misses channel file(s) {absent}")
    return cases, problems


def _raise_problems(path: Path, problems: list[str]) -> None:
    """Raise one DataError listing every problem found in ``path``'s dataset."""
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_PROBLEMS])
    more = (
        f"\n  … and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
    )
    raise DataError(f"{len(problems)} problem(s) in {path}:\n  {shown}{more}")


def _repeated(what: str, values: Iterable[str]) -> list[str]:
    """A problem naming the values that occur more than once."""
    repeats = [value for value, count in Counter(values).items() if count > 1]
    return [f"{what}s repeat: {_preview(repeats)}"] if repeats else []


def _preview(values: Sequence[object]) -> str:
    """The first few values and how many there are in all."""
    shown = ", ".join(repr(v) for v in values[:_SHOWN])
    return f"{shown} … ({len(values)} in all)" if len(values) > _SHOWN else shown


def _load_table(
    source: str | Path | pd.DataFrame,
    label: str,
    required: Sequence[str],
    id_columns: Sequence[str],
    root: str | Path | None = None,
) -> tuple[pd.DataFrame, str]:
    """A copy of the table with ids as text and relative paths resolved, and its name."""
    if isinstance(source, pd.DataFrame):
        frame, name, folder, where = source.copy(), f"<{label}>", Path.cwd(), "position(s)"
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: {label} not found")
        text_columns = dict.fromkeys((keys.CASE_ID, *DICOM_KEYS), str)
        try:
            frame = pd.read_csv(path, dtype=text_columns)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{path}: not a readable CSV {label} ({err})") from err
        name, folder, where = str(path), path.parent.resolve(), "CSV row(s)"
    base = Path(root).resolve() if root is not None else folder
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; found {list(frame.columns)}")
    for column in id_columns:
        values = [None if _is_empty(v) else str(v).strip() for v in frame[column]]
        first = 2 if where.startswith("CSV") else 0
        empty = [i + first for i, v in enumerate(values) if v is None]
        frame[column] = values
        if empty:
            raise DataError(f"{name}: column '{column}' is empty at {where} {_preview(empty)}")
    for column in (keys.IMAGE, keys.MASK, SERIES_FILES):
        if column in frame.columns:
            frame[column] = [None if _is_empty(v) else _under(base, str(v)) for v in frame[column]]
    return frame, name


def _under(base: Path, value: str) -> str:
    """``value`` (or each of its ``;``-separated paths) made absolute against ``base``."""
    return ";".join(str(base / part) for part in value.split(";"))


def _is_empty(value: object) -> bool:
    """True for None, NaN and blank text."""
    return (
        value is None or (not isinstance(value, str) and pd.isna(value)) or not str(value).strip()
    )


def _refuse_repeats(name: str, column: str, values: pd.Series) -> None:
    """Raise a DataError naming the values of ``column`` that occur more than once."""
    repeats = values[values.duplicated()].unique().tolist()
    if repeats:
        raise DataError(f"{name}: column '{column}' has repeated values {_preview(repeats)}")


def _refuse_unmatched(
    name: str, column: str, values: pd.Series, known: set[str], where: str
) -> None:
    """Raise a DataError naming the values of ``column`` that are not in ``known``."""
    unmatched = sorted({v for v in values if v not in known})
    if unmatched:
        raise DataError(
            f"{name}: {len(unmatched)} value(s) of column '{column}' have no match {where}: "
            f"{_preview(unmatched)}"
        )


def _refuse_disagreements(
    table: pd.DataFrame, marks: pd.DataFrame, key: str, table_name: str, marks_name: str
) -> None:
    """Raise a DataError when a column in both tables holds different values for a key."""
    problems = []
    for column in [c for c in marks.columns if c in table.columns and c != key]:
        pairs = table[[key, column]].merge(marks[[key, column]], on=key, suffixes=("", "_l"))
        left, right = pairs[column].astype(str), pairs[f"{column}_l"].astype(str)
        differ = sorted(set(pairs.loc[left != right, key]))
        if differ:
            problems.append(f"column '{column}' differs for {key} {_preview(differ)}")
    if problems:
        raise DataError(f"{marks_name} disagrees with {table_name}: " + "; ".join(problems))
