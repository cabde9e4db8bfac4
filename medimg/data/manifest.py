"""Manifests: one CSV row per case; reading, validating and preflight-checking them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.data.targets import StudyColumns, map_columns, target_problems

BASE_COLUMNS = (keys.CASE_ID, keys.PATIENT_ID, keys.IMAGE)
TASK_COLUMNS = {
    "classification": (keys.LABEL,),
    "segmentation": (keys.MASK,),
    "regression": (keys.LABEL,),
}
PATH_COLUMNS = (keys.IMAGE, keys.MASK)


def required_columns(task: str) -> tuple[str, ...]:
    """Columns a manifest needs for ``task`` (``classification``, ``segmentation``, ``regression``)."""
    if task not in TASK_COLUMNS:
        raise ValueError(f"task must be one of {sorted(TASK_COLUMNS)}, got {task!r}")
    return BASE_COLUMNS + TASK_COLUMNS[task]


def read_manifest(
    path: str | Path, columns: Sequence[str], extra_paths: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a manifest CSV, check its columns and resolve relative paths against its folder.

    Args:
        path: the CSV file.
        columns: columns that must be present.

    Returns:
        The table with ``image``/``mask`` as absolute paths; extra columns are kept.

    Raises:
        DataError: the file is missing or unreadable, a column is missing, or case ids repeat.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    try:
        frame = pd.read_csv(path, dtype={keys.CASE_ID: str, keys.PATIENT_ID: str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV manifest ({err})") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: manifest is missing required column(s) {missing}; found {list(frame.columns)}"
        )
    dupes = frame[keys.CASE_ID][frame[keys.CASE_ID].duplicated()].tolist()
    if dupes:
        raise DataError(f"{path}: column 'case_id' has repeated values {dupes[:5]}")
    root = path.parent.resolve()
    for column in dict.fromkeys([*PATH_COLUMNS, *extra_paths]):
        if column in frame.columns:
            frame[column] = [_resolve(root, value) for value in frame[column]]
    return frame


def _resolve(root: Path, value: object) -> str | None:
    """Absolute path for a manifest cell, or None for an empty cell."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return None
    candidate = Path(str(value))
    return str(candidate if candidate.is_absolute() else root / candidate)


def _is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble magic ``DICM``."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def check_image_path(value: str | None) -> str | None:
    """Problem with one image or mask path, or None when it looks readable."""
    if value is None:
        return "empty path"
    path = Path(value)
    if not path.exists():
        return f"file not found: {path}"
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file()]
        if not any(_is_dicom_file(p) for p in files):
            return f"DICOM folder has no DICOM images: {path}"
    elif path.stat().st_size == 0:
        return f"file is empty: {path}"
    return None


def preflight(
    frame: pd.DataFrame,
    manifest_path: str | Path,
    task: str,
    columns: StudyColumns | None = None,
) -> None:
    """Check every case before training and report all problems at once.

    Raises:
        DataError: listing each bad row as ``<manifest> row N (case X): column 'c': problem``.
    """
    columns = columns or StudyColumns()
    problems = [f"{manifest_path} {p}" for p in target_problems(frame, columns, task)]
    mask_column = columns.mask if columns.mask in frame.columns else keys.MASK
    for row_number, row in enumerate(frame.itertuples(index=False), start=2):
        record = row._asdict()
        prefix = f"{manifest_path} row {row_number} (case {record[keys.CASE_ID]})"
        checked = [keys.IMAGE] + ([mask_column] if task == "segmentation" else [])
        for column in checked:
            if column not in record:
                continue
            problem = check_image_path(record[column])
            if problem:
                problems.append(f"{prefix}: column '{column}': {problem}")
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"{len(problems)} problem(s) in {manifest_path}:\n  {shown}{more}")


def load_manifest(path: str | Path, task: str, columns: StudyColumns | None = None) -> pd.DataFrame:
    """Read, validate and preflight-check a manifest for ``task``.

    Args:
        path: the CSV file.
        task: ``classification``, ``segmentation`` or ``regression``.
        columns: the study's target/mask/covariate columns (default ``label`` and ``mask``);
            they are mapped onto ``label``/``mask`` in the returned table.
    """
    columns = columns or StudyColumns()
    required_columns(task)
    frame = read_manifest(path, columns.source_columns(task), extra_paths=[columns.mask])
    preflight(frame, path, task, columns)
    return map_columns(frame, columns, task)


def manifest_paths(internal: str, external: dict[str, str] | None = None) -> dict[str, object]:
    """Data source for user manifests: the internal manifest and named external ones."""
    return {
        "internal": Path(internal),
        "external": {k: Path(v) for k, v in (external or {}).items()},
    }
