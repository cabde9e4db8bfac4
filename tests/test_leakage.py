"""Leakage checks: shared patients, shared studies and byte-identical images between sets."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medimg.data.errors import DataError
from medimg.data.leakage import check_leakage, content_digest, content_digests, sets_by_split
from medimg.data.manifest import read_manifest
from medimg.data.splits import split_by_patient


def _file(path: Path, payload: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return str(path)


def _series(folder: Path, slices: list[bytes]) -> str:
    """A fake DICOM series folder: one file per slice."""
    for i, payload in enumerate(slices):
        _file(folder / f"IM{i:04d}.dcm", payload)
    return str(folder)


def _frame(tmp: Path, prefix: str, patients: list[str], **extra) -> pd.DataFrame:
    """One case per patient, each with its own distinct image file."""
    cases = [f"{prefix}{i}" for i in range(len(patients))]
    images = [_file(tmp / prefix / f"{c}.nii.gz", f"{prefix}-{c}".encode()) for c in cases]
    return pd.DataFrame({"case_id": cases, "patient_id": patients, "image": images, **extra})


def test_clean_sets_pass(tmp_path):
    sets = {
        "train": _frame(tmp_path, "t", ["P1", "P2", "P2"], study_uid=["1.1", "1.2", "1.3"]),
        "val": _frame(tmp_path, "v", ["P3"], study_uid=["1.4"]),
        "external": _frame(tmp_path, "x", ["Q1"]),
    }
    assert check_leakage(sets) is None


def test_shared_patient_names_sets_and_ids(tmp_path):
    sets = {
        "train": _frame(tmp_path, "t", ["P1", "P2", "P3"]),
        "val": _frame(tmp_path, "v", ["P4"]),
        "test": _frame(tmp_path, "s", ["P2", "P3", "P5"]),
    }
    with pytest.raises(DataError) as err:
        check_leakage(sets)
    message = str(err.value)
    assert "data leakage between sets ['train', 'val', 'test'] (1 finding(s))" in message
    assert "2 patient_id(s) in 'train' and 'test': P2, P3" in message


def test_shared_study_with_different_patient_ids(tmp_path):
    sets = {
        "train": _frame(tmp_path, "t", ["P1", "P2"], study_uid=["1.2.3", "1.2.4"]),
        "test": _frame(tmp_path, "s", ["ANON-9"], study_uid=["1.2.4"]),
        "external": _frame(tmp_path, "x", ["Q1"]),  # no study_uid column: not compared
    }
    with pytest.raises(DataError, match=r"1 study_uid\(s\) in 'train' and 'test': 1.2.4"):
        check_leakage(sets)


def test_identical_image_under_another_case_id(tmp_path):
    train = _frame(tmp_path, "t", ["P1", "P2"])
    external = _frame(tmp_path, "x", ["Q1", "Q2"])
    shutil.copyfile(train.loc[1, "image"], external.loc[0, "image"])  # same bytes, new name
    with pytest.raises(DataError) as err:
        check_leakage({"train": train, "external": external})
    message = str(err.value)
    assert (
        "1 identical image(s) in column 'image' in 'train' and 'external': train:t1 = external:x0"
        in message
    )
    assert "patient_id" not in message
    check_leakage({"train": train, "external": external}, content_hash=False)


def test_identical_dicom_series_with_renamed_files(tmp_path):
    slices = [b"slice-0" * 100, b"slice-1" * 100, b"slice-2" * 100]
    original = _series(tmp_path / "a" / "series", slices)
    copy = tmp_path / "b" / "series"
    for i, name in enumerate(sorted(Path(original).iterdir())):
        _file(copy / f"renamed_{9 - i}", name.read_bytes())
    _file(copy / ".DS_Store", b"finder junk")
    other = _series(tmp_path / "c" / "series", slices[:2])
    assert content_digest(original) == content_digest(copy)
    assert content_digest(original) != content_digest(other)
    train = pd.DataFrame(
        {"case_id": ["A1", "A2"], "patient_id": ["P1", "P2"], "image": [original, other]}
    )
    external = pd.DataFrame({"case_id": ["B7"], "patient_id": ["Q7"], "image": [str(copy)]})
    with pytest.raises(DataError, match="train:A1 = external:B7"):
        check_leakage({"train": train, "external": external})


def test_every_kind_of_leak_is_reported_at_once(tmp_path):
    train = _frame(
        tmp_path, "t", [f"P{i}" for i in range(15)], study_uid=[f"1.{i}" for i in range(15)]
    )
    test = _frame(
        tmp_path, "s", [f"P{i}" for i in range(12)] + ["Z"], study_uid=["9.9"] * 12 + ["1.0"]
    )
    shutil.copyfile(train.loc[0, "image"], test.loc[12, "image"])
    with pytest.raises(DataError, match=r"\(3 finding\(s\)\)") as err:
        check_leakage({"train": train, "test": test})
    lines = str(err.value).splitlines()
    patient = next(line for line in lines if "patient_id" in line)
    assert patient.startswith("  12 patient_id(s) in 'train' and 'test': P0, P1, P10, P11, P2,")
    assert patient.endswith(" …") and patient.count(",") == 9  # the first ten, then a count
    assert any("1 study_uid(s) in 'train' and 'test': 1.0" in line for line in lines)
    assert any("train:t0 = test:s12" in line for line in lines)


def test_duplicates_within_one_set_are_not_leaks(tmp_path):
    train = _frame(tmp_path, "t", ["P1", "P1"])
    shutil.copyfile(train.loc[0, "image"], train.loc[1, "image"])
    check_leakage({"train": train, "val": _frame(tmp_path, "v", ["P2"])})


def test_unusable_inputs_are_refused(tmp_path):
    good = _frame(tmp_path, "t", ["P1"])
    with pytest.raises(DataError, match=r"set 'val': missing column\(s\) \['patient_id'\]"):
        check_leakage({"train": good, "val": good.drop(columns=["patient_id"])})
    missing = good.assign(image=[str(tmp_path / "gone.nii.gz")])
    with pytest.raises(
        DataError, match="set 'val' case t0: column 'image': not found: .*gone.nii.gz"
    ):
        check_leakage({"train": good, "val": missing.assign(patient_id=["P2"])})
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(DataError, match="empty: folder holds no files"):
        content_digest(empty_dir)
    blank = good.assign(image=[None], patient_id=["P2"], case_id=["v0"])
    with pytest.raises(DataError, match="set 'val' case v0: column 'image' is empty"):
        check_leakage({"train": good, "val": blank})


def test_digests_match_blake2b_and_do_not_depend_on_threads(tmp_path):
    payload = bytes(range(256)) * 5000  # > 1 MiB: read in chunks
    path = _file(tmp_path / "big.bin", payload)
    assert content_digest(path) == hashlib.blake2b(payload, digest_size=32).hexdigest()
    folders = [
        _series(tmp_path / f"s{k}", [bytes([k, i]) * 50 for i in range(5)]) for k in range(6)
    ]
    assert content_digests(folders, workers=1) == content_digests(folders, workers=4)


def test_sets_by_split(tmp_path):
    frame = _frame(tmp_path, "t", ["P1", "P2", "P3", "P4"])
    frame["split"] = ["holdout", "val", "train", "train"]
    sets = sets_by_split(frame)
    assert list(sets) == ["train", "val", "holdout"] and len(sets["train"]) == 2
    frame.loc[2, "patient_id"] = "P2"
    with pytest.raises(DataError, match="1 patient_id.s. in 'train' and 'val': P2"):
        check_leakage(sets_by_split(frame))
    with pytest.raises(DataError, match="manifest has no 'fold' column"):
        sets_by_split(frame, "fold")


def test_built_in_dataset_splits_are_leak_free_until_a_series_is_copied(manifests, tmp_path):
    columns = ["case_id", "patient_id", "image"]
    internal = split_by_patient(read_manifest(manifests["internal"], columns), 0.2, 0.2, seed=0)
    external = read_manifest(manifests["external"], columns)
    check_leakage(sets_by_split(internal) | {"external": external})
    train = sets_by_split(internal)["train"]
    copy = shutil.copytree(train["image"].iloc[0], tmp_path / "renamed_series")
    external.loc[0, "image"] = str(copy)
    with pytest.raises(DataError, match=f"train:{train['case_id'].iloc[0]} = external:"):
        check_leakage(sets_by_split(internal) | {"external": external})
