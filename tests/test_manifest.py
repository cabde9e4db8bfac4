"""Manifests and their preflight: every bad input names the file, the column and the problem."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from medimg.data.errors import DataError
from medimg.data.manifest import load_manifest, read_manifest, required_columns


def _copy_manifest(manifests, tmp_path, edit):
    """Copy the tiny internal manifest (absolute paths) into tmp_path after ``edit(frame)``."""
    frame = read_manifest(manifests["internal"], required_columns("segmentation"))
    frame = edit(frame) if edit else frame
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def test_reads_and_resolves_relative_paths(manifests):
    frame = load_manifest(manifests["internal"], "segmentation")
    assert {"case_id", "patient_id", "image", "label", "mask", "sex", "age", "site"} <= set(
        frame.columns
    )
    assert all(p.startswith(str(manifests["internal"].parent)) for p in frame["image"])


def test_missing_column_is_named(manifests, tmp_path):
    path = _copy_manifest(manifests, tmp_path, lambda f: f.drop(columns=["label"]))
    with pytest.raises(
        DataError, match=r"manifest.csv: manifest is missing required column\(s\) \['label'\]"
    ):
        load_manifest(path, "classification")


def test_missing_file_names_row_column_and_path(manifests, tmp_path):
    def edit(frame):
        frame.loc[1, "image"] = str(tmp_path / "nowhere" / "series")
        return frame

    path = _copy_manifest(manifests, tmp_path, edit)
    with pytest.raises(DataError) as err:
        load_manifest(path, "classification")
    message = str(err.value)
    assert "row 3" in message and "column 'image'" in message
    assert f"file not found: {tmp_path / 'nowhere' / 'series'}" in message


def test_dicom_folder_without_images(manifests, tmp_path):
    empty = tmp_path / "empty_series"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a DICOM file")

    def edit(frame):
        frame.loc[0, "image"] = str(empty)
        return frame

    path = _copy_manifest(manifests, tmp_path, edit)
    with pytest.raises(DataError, match=f"DICOM folder has no DICOM images: {empty}"):
        load_manifest(path, "classification")


def test_all_problems_reported_at_once(manifests, tmp_path):
    def edit(frame):
        frame.loc[0, "image"] = "/missing/a"
        frame.loc[2, "mask"] = "/missing/b.nii.gz"
        frame["label"] = frame["label"].astype(float)
        frame.loc[3, "label"] = -1
        frame.loc[4, "label"] = 0.5
        return frame

    path = _copy_manifest(manifests, tmp_path, edit)
    with pytest.raises(DataError, match="3 problem") as err:
        load_manifest(path, "classification")
    assert "column 'label': expected an integer class >= 0, got 0.5" in str(err.value)
    with pytest.raises(DataError, match="2 problem") as err:
        load_manifest(path, "segmentation")
    assert "column 'mask': file not found: /missing/b.nii.gz" in str(err.value)


def test_repeated_case_ids_are_refused(manifests, tmp_path):
    path = _copy_manifest(manifests, tmp_path, lambda f: pd.concat([f, f.iloc[:1]]))
    with pytest.raises(DataError, match="repeated"):
        load_manifest(path, "classification")


def test_missing_manifest_and_unknown_task(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        load_manifest(tmp_path / "absent.csv", "classification")
    with pytest.raises(ValueError, match="task must be one of"):
        required_columns("detection")


def test_relative_paths_follow_the_manifest(manifests, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(manifests["internal"].parent, target)
    frame = load_manifest(target / "manifest.csv", "classification")
    assert all(p.startswith(str(target)) for p in frame["image"])
