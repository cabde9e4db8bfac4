"""Keyed pseudonyms for patient identifiers written into run folders.

A manifest's ``patient_id`` is often a hospital record number. Run folders are shared (with
co-authors, on clusters, in supplementary material), so the tables medimg writes there name
patients by a pseudonym instead: ``psn-`` and the first 16 hex digits of
HMAC-SHA256(key, patient_id).

Why a secret key and not a plain or salted hash stored with the run: record numbers are short
and enumerable, so anyone holding the run folder could hash every candidate number and match
it. The key lives outside every run folder (by default ``~/.medimg/pseudonym.key``, created on
first use, readable by its owner only); whoever holds it and the manifest can re-identify, no
one else can. The same key gives the same pseudonym for a patient in every run, so splits of
different runs can still be compared patient by patient.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from medimg.data.errors import DataError
from medimg.files import write_atomic

PREFIX = "psn-"
KEY_BYTES = 32
_DIGITS = 16  # 64 bits: collisions stay negligible for any realistic number of patients


def read_or_create_key(path: str | Path) -> bytes:
    """The pseudonym key at ``path``; a new random one (mode 0600) when the file is missing.

    Raises:
        DataError: the file exists but does not hold a key of :data:`KEY_BYTES` random bytes.
    """
    path = Path(path).expanduser()
    if not path.exists():
        try:
            _create_key(path)
        except OSError as err:
            raise DataError(f"{path}: cannot create the pseudonym key ({err})") from err
    try:
        key = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the pseudonym key ({err})") from err
    if len(key) != KEY_BYTES:
        raise DataError(
            f"{path}: not a medimg pseudonym key ({len(key)} bytes, expected {KEY_BYTES}); "
            "point privacy.key_file at your key, or move this file away to create a new one "
            "(pseudonyms of earlier runs will then differ)"
        )
    return key


def _create_key(path: Path) -> None:
    """Write a random key, complete and owner-only, without replacing one made meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # unlike a rename, fails if another process created the key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def pseudonym(patient_id: object, key: bytes) -> str:
    """``psn-<16 hex digits>``: HMAC-SHA256 of the identifier's text under ``key``."""
    digest = hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:_DIGITS]


def pseudonymise(ids: Iterable[object], key: bytes) -> list[str]:
    """:func:`pseudonym` of each identifier, in order."""
    return [pseudonym(i, key) for i in ids]


def write_mapping(path: str | Path, ids: Iterable[object], key: bytes, run_dir: Path) -> Path:
    """Write ``pseudonym,patient_id`` for the data owner, outside the run folder.

    Raises:
        DataError: ``path`` lies inside ``run_dir`` (the mapping would undo the pseudonyms).
    """
    path = Path(path).expanduser().resolve()
    if path.is_relative_to(Path(run_dir).resolve()):
        raise DataError(
            f"privacy.mapping_file={path}: inside the run folder {run_dir}; the mapping "
            "re-identifies patients, so it must be kept outside the folders you share"
        )
    unique = list(dict.fromkeys(str(i) for i in ids))
    table = pd.DataFrame({"pseudonym": pseudonymise(unique, key), "patient_id": unique})
    return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
