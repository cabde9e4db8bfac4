"""Leakage checks between data sets: shared patients, shared studies, byte-identical images."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.data.splits import SPLITS

STUDY_UID = "study_uid"
DIGEST_SIZE = 32
_CHUNK = 1 << 20
_SHOWN = 10


def content_digest(path: str | Path) -> str:
    """BLAKE2b hex digest of an image's content.

    A file is hashed byte for byte. A folder (a DICOM series) is hashed as the digest of
    its files' sorted digests, so renaming or reordering files does not change it; hidden
    files (``.DS_Store``) are skipped and sub-folders are included.

    Raises:
        DataError: the path does not exist, or the folder holds no files.
    """
    return content_digests([path])[str(path)]


def content_digests(paths: Iterable[str | Path], workers: int | None = None) -> dict[str, str]:
    """:func:`content_digest` of many paths, hashing every distinct file once in a thread pool.

    Args:
        paths: files or folders.
        workers: threads (hashlib releases the GIL on large buffers); None lets Python choose.

    Returns:
        ``{str(path): hex digest}``.

    Raises:
        DataError: listing every path that does not exist or is an empty folder.
    """
    members = {str(p): _member_files(Path(p)) for p in paths}
    problems = [f"{p}: {files}" for p, files in members.items() if isinstance(files, str)]
    if problems:
        raise DataError("cannot hash image content:\n  " + "\n  ".join(problems))
    unique = sorted({f for files in members.values() for f in files})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = dict(zip(unique, pool.map(_file_digest, unique), strict=True))
    out = {}
    for path, files in members.items():
        if Path(path).is_dir():
            out[path] = _combine(sorted(digests[f] for f in files))
        else:
            out[path] = digests[files[0]]
    return out


def check_leakage(
    sets: Mapping[str, pd.DataFrame],
    content_hash: bool = True,
    image_column: str = keys.IMAGE,
    workers: int | None = None,
) -> None:
    """Refuse data sets that share patients, studies or image content.

    Checks every pair of sets (e.g. ``train``/``val``/``test``/``external``) for a
    ``patient_id`` in both, a ``study_uid`` in both (in the sets that have that column) and,
    when ``content_hash``, byte-identical images (see :func:`content_digest`) even under
    different case ids. Byte-level hashing finds copies; it does not find the same scan
    re-exported with new UIDs or different compression.

    Args:
        sets: name → manifest frame (``case_id``, ``patient_id``, ``image``, …).
        content_hash: also compare image content.
        image_column: the column holding image paths.
        workers: threads for hashing; None lets Python choose.

    Raises:
        DataError: a set lacks ``patient_id`` or ``case_id`` (or ``image_column`` when
            hashing), an image cannot be read, or, listing every leak with the sets it joins
            and the first offending ids, any set shares a patient, study or image with another.
    """
    names = list(sets)
    for name, frame in sets.items():
        needed = [keys.CASE_ID, keys.PATIENT_ID] + ([image_column] if content_hash else [])
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"set '{name}': missing column(s) {missing}")
    leaks = _shared_ids(sets, keys.PATIENT_ID) + _shared_ids(sets, STUDY_UID)
    if content_hash:
        leaks += _shared_content(sets, image_column, workers)
    if leaks:
        raise DataError(
            f"data leakage between sets {names} ({len(leaks)} finding(s)):\n  " + "\n  ".join(leaks)
        )


def sets_by_split(frame: pd.DataFrame, column: str = "split") -> dict[str, pd.DataFrame]:
    """Split a manifest into ``{split: rows}`` (train, val, test first) for :func:`check_leakage`."""
    if column not in frame.columns:
        raise DataError(f"manifest has no '{column}' column; found {list(frame.columns)}")
    groups = {str(name): rows for name, rows in frame.groupby(column, sort=False)}
    order = [name for name in SPLITS if name in groups] + sorted(set(groups) - set(SPLITS))
    return {name: groups[name] for name in order}


def _member_files(path: Path) -> list[str] | str:
    """Files whose bytes make up ``path``'s content, or a problem description."""
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        return "not found"
    files = [
        str(p)
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    return files or "folder holds no files"


def _file_digest(path: str) -> str:
    """BLAKE2b hex digest of one file's bytes."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _combine(digests: list[str]) -> str:
    """BLAKE2b hex digest of a sorted list of digests."""
    return hashlib.blake2b("\n".join(digests).encode(), digest_size=DIGEST_SIZE).hexdigest()


def _shared_ids(sets: Mapping[str, pd.DataFrame], column: str) -> list[str]:
    """One finding per group of sets that share values of ``column``."""
    owners: dict[str, set[str]] = defaultdict(set)
    for name, frame in sets.items():
        if column in frame.columns:
            for value in frame[column].dropna():
                owners[str(value)].add(name)
    return _findings(sets, owners, f"{column}(s)")


def _shared_content(
    sets: Mapping[str, pd.DataFrame], column: str, workers: int | None
) -> list[str]:
    """One finding per group of sets that hold byte-identical images."""
    entries = _image_entries(sets, column)
    digests = content_digests({path for _, _, path in entries}, workers)
    holders: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, case, path in entries:
        holders[digests[path]].append((name, case))
    owners: dict[str, set[str]] = {}
    for cases in holders.values():
        if len({name for name, _ in cases}) > 1:
            owners[" = ".join(f"{name}:{case}" for name, case in cases)] = {n for n, _ in cases}
    return _findings(sets, owners, f"identical image(s) in column '{column}'")


def _image_entries(sets: Mapping[str, pd.DataFrame], column: str) -> list[tuple[str, str, str]]:
    """``(set, case_id, path)`` for every row; refuses empty or missing paths, naming set and case."""
    entries, empty = [], []
    for name, frame in sets.items():
        for case, path in zip(frame[keys.CASE_ID], frame[column], strict=True):
            if path is None or (not isinstance(path, str) and pd.isna(path)) or not str(path):
                empty.append(f"set '{name}' case {case}: column '{column}' is empty")
            elif not Path(str(path)).exists():
                empty.append(f"set '{name}' case {case}: column '{column}': not found: {path}")
            else:
                entries.append((name, str(case), str(path)))
    if empty:
        raise DataError("cannot hash image content:\n  " + "\n  ".join(empty))
    return entries


def _findings(
    sets: Mapping[str, pd.DataFrame], owners: Mapping[str, set[str]], what: str
) -> list[str]:
    """Group values held by more than one set by the sets that hold them; describe each group."""
    order = {name: i for i, name in enumerate(sets)}
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for value, holders in owners.items():
        if len(holders) > 1:
            groups[tuple(sorted(holders, key=order.__getitem__))].append(value)
    findings = []
    for group, values in sorted(groups.items(), key=lambda item: [order[n] for n in item[0]]):
        values = sorted(values)
        shown = ", ".join(values[:_SHOWN]) + (" …" if len(values) > _SHOWN else "")
        findings.append(f"{len(values)} {what} in {' and '.join(map(repr, group))}: {shown}")
    return findings
