"""Manifests from MSD, nnU-Net v2, CSV and DICOM series + labels: happy paths and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medimg.data.errors import DataError
from medimg.data.sources import (
    manifest_from_csv,
    manifest_from_dicom_labels,
    manifest_from_msd,
    manifest_from_nnunet,
)


def _nifti(path: Path, value: int = 0) -> Path:
    """Write a tiny 4×4×3 NIfTI volume filled with ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, np.int16), np.eye(4)), path)
    return path


def _msd(root: Path, cases=("liver_0", "liver_1", "liver_2"), **overrides) -> Path:
    """A fake MSD task folder; returns its dataset.json."""
    for i, case in enumerate(cases):
        _nifti(root / "imagesTr" / f"{case}.nii.gz", i)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", 1)
    meta = {
        "name": "Liver",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases
        ],
        "test": [],
    }
    meta.update(overrides)
    path = root / "dataset.json"
    path.write_text(json.dumps(meta))
    return path


def _nnunet(root: Path, cases=("la_003", "la_004"), channels=("CT",), **overrides) -> Path:
    """A fake nnU-Net v2 raw dataset folder."""
    for case in cases:
        for k in range(len(channels)):
            _nifti(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", k)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", 1)
    meta = {
        "channel_names": {str(k): name for k, name in enumerate(channels)},
        "labels": {"background": 0, "heart": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    meta.update(overrides)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# --- MSD ---------------------------------------------------------------------------------


def test_msd_manifest(tmp_path):
    dataset_json = _msd(tmp_path / "Task03_Liver")
    out = tmp_path / "out" / "manifest.csv"
    frame = manifest_from_msd(dataset_json, out=out)
    assert list(frame.columns) == ["case_id", "patient_id", "image", "mask"]
    assert frame["case_id"].tolist() == ["liver_0", "liver_1", "liver_2"]
    assert (frame["patient_id"] == frame["case_id"]).all()
    root = (tmp_path / "Task03_Liver").resolve()
    assert frame.loc[1, "image"] == str(root / "imagesTr" / "liver_1.nii.gz")
    assert frame.loc[1, "mask"] == str(root / "labelsTr" / "liver_1.nii.gz")
    assert frame.attrs["labels"] == {0: "background", 1: "liver", 2: "cancer"}
    assert frame.attrs["channels"] == {0: "CT"}
    again = manifest_from_csv(out, ["case_id", "patient_id", "image", "mask"])
    pd.testing.assert_frame_equal(again, frame, check_dtype=False)
    assert not list(out.parent.glob(".*.tmp"))


def test_msd_missing_files_are_all_listed(tmp_path):
    dataset_json = _msd(tmp_path)
    (tmp_path / "imagesTr" / "liver_1.nii.gz").unlink()
    (tmp_path / "labelsTr" / "liver_2.nii.gz").unlink()
    with pytest.raises(DataError, match="2 problem") as err:
        manifest_from_msd(dataset_json)
    message = str(err.value)
    assert str(dataset_json) in message
    assert f"field 'training[1]'.image: file not found: {tmp_path / 'imagesTr'}" in message
    assert "field 'training[2]'.label: file not found" in message


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"numTraining": 5}, "field 'numTraining': declares 5, but there are 3"),
        ({"training": {"a": 1}}, "field 'training' must be a list, got dict"),
        ({"labels": {"zero": "background"}}, "field 'labels' must map integer keys"),
        (
            {"training": [{"image": "./imagesTr/liver_0.nii.gz"}]},
            r"field 'training\[0\]': expected",
        ),
        (
            {
                "numTraining": 2,
                "training": [
                    {"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}
                ]
                * 2,
            },
            "case ids repeat: 'liver_0'",
        ),
    ],
)
def test_msd_bad_dataset_json(tmp_path, overrides, expected):
    dataset_json = _msd(tmp_path, **overrides)
    with pytest.raises(DataError, match=expected) as err:
        manifest_from_msd(dataset_json)
    assert str(dataset_json) in str(err.value)


def test_msd_missing_field_missing_file_and_bad_json(tmp_path):
    dataset_json = _msd(tmp_path)
    meta = json.loads(dataset_json.read_text())
    del meta["training"]
    dataset_json.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="dataset.json: field 'training' is missing"):
        manifest_from_msd(dataset_json)
    dataset_json.write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not valid JSON"):
        manifest_from_msd(dataset_json)
    dataset_json.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        manifest_from_msd(dataset_json)
    with pytest.raises(DataError, match="absent.json: file not found"):
        manifest_from_msd(tmp_path / "absent.json")


# --- nnU-Net v2 --------------------------------------------------------------------------


def test_nnunet_single_channel(tmp_path):
    folder = _nnunet(tmp_path / "Dataset002_Heart")
    (folder / "imagesTr" / "._la_003_0000.nii.gz").write_bytes(b"macOS junk")
    (folder / "imagesTr" / "notes.txt").write_text("ignored: other file ending")
    frame = manifest_from_nnunet(folder, out=tmp_path / "manifest.csv")
    assert list(frame.columns) == ["case_id", "patient_id", "image", "mask"]
    assert frame["case_id"].tolist() == ["la_003", "la_004"]
    assert frame.loc[0, "image"] == str(folder.resolve() / "imagesTr" / "la_003_0000.nii.gz")
    assert frame.loc[0, "mask"] == str(folder.resolve() / "labelsTr" / "la_003.nii.gz")
    assert frame.attrs["labels"] == {"background": 0, "heart": 1}
    assert frame.attrs["channels"] == {0: "CT"}
    assert (tmp_path / "manifest.csv").is_file()


def test_nnunet_multi_channel_gets_one_column_per_channel(tmp_path):
    folder = _nnunet(tmp_path, cases=("BRATS_001", "BRATS_002"), channels=("FLAIR", "T1w", "T2w"))
    frame = manifest_from_nnunet(folder)
    assert list(frame.columns) == ["case_id", "patient_id", "image", "image_1", "image_2", "mask"]
    assert frame.loc[1, "image"].endswith("imagesTr/BRATS_002_0000.nii.gz")
    assert frame.loc[1, "image_2"].endswith("imagesTr/BRATS_002_0002.nii.gz")
    assert frame.attrs["channels"] == {0: "FLAIR", 1: "T1w", 2: "T2w"}


def test_nnunet_problems_are_all_listed(tmp_path):
    folder = _nnunet(tmp_path, cases=("a_1", "a_2", "a_3"), channels=("T2", "ADC"))
    (folder / "imagesTr" / "a_2_0001.nii.gz").unlink()
    (folder / "labelsTr" / "a_3.nii.gz").unlink()
    _nifti(folder / "labelsTr" / "orphan.nii.gz")
    _nifti(folder / "imagesTr" / "misnamed.nii.gz")
    _nifti(folder / "imagesTr" / "a_1_0002.nii.gz")
    with pytest.raises(DataError, match="5 problem") as err:
        manifest_from_nnunet(folder)
    message = str(err.value)
    assert str(folder / "dataset.json") in message
    assert "imagesTr: case 'a_2' misses channel file(s) ['a_2_0001.nii.gz']" in message
    assert "labelsTr: no label file a_3.nii.gz for case 'a_3'" in message
    assert "labelsTr/orphan.nii.gz: label without images" in message
    assert "imagesTr/misnamed.nii.gz: not named <case>_<XXXX>.nii.gz" in message
    assert "imagesTr/a_1_0002.nii.gz: channel 2 is not in 'channel_names'" in message


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"channel_names": {"0": "CT", "2": "PET"}}, "'channel_names' must have keys '0'..'1'"),
        ({"channel_names": {}}, "'channel_names' must have keys"),
        ({"file_ending": 7}, "field 'file_ending' must be a str, got int"),
        ({"labels": ["background"]}, "field 'labels' must be a dict, got list"),
        ({"numTraining": 9}, "field 'numTraining': declares 9, but there are 2 cases in"),
    ],
)
def test_nnunet_bad_dataset_json(tmp_path, overrides, expected):
    folder = _nnunet(tmp_path, **overrides)
    with pytest.raises(DataError, match=expected) as err:
        manifest_from_nnunet(folder)
    assert str(folder / "dataset.json") in str(err.value)


def test_nnunet_missing_folders(tmp_path):
    with pytest.raises(DataError, match="dataset.json: file not found"):
        manifest_from_nnunet(tmp_path)
    folder = _nnunet(tmp_path)
    for path in (folder / "imagesTr").iterdir():
        path.unlink()
    (folder / "imagesTr").rmdir()
    with pytest.raises(DataError, match="imagesTr: folder not found"):
        manifest_from_nnunet(folder)


# --- CSV ---------------------------------------------------------------------------------


def test_csv_keeps_extra_columns_and_resolves_paths(tmp_path):
    _nifti(tmp_path / "img" / "c1.nii.gz")
    path = tmp_path / "m.csv"
    pd.DataFrame(
        {"case_id": ["c1"], "patient_id": ["007"], "image": ["img/c1.nii.gz"], "site": ["X"]}
    ).to_csv(path, index=False)
    frame = manifest_from_csv(path)
    assert frame.loc[0, "patient_id"] == "007"
    assert frame.loc[0, "site"] == "X"
    assert frame.loc[0, "image"] == str(tmp_path.resolve() / "img" / "c1.nii.gz")
    with pytest.raises(
        DataError, match=r"m.csv: manifest is missing required column\(s\) \['label'\]"
    ):
        manifest_from_csv(path, ["case_id", "label"])


# --- DICOM series + labels ---------------------------------------------------------------


def _series_table() -> pd.DataFrame:
    """Four series: patient P1 has two studies (one with two series), P2 has one study."""
    return pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P1", "P2"],
            "study_uid": ["1.2.10", "1.2.10", "1.2.20", "1.2.30"],
            "series_uid": ["1.2.10.1", "1.2.10.2", "1.2.20.1", "1.2.30.1"],
            "modality": ["CT", "CT", "CT", "MR"],
            "files": ["p1/s1", "p1/s2", "p1/s3", "p2/s1"],
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_dicom_labels_by_series_from_csv(tmp_path):
    series = _write(_series_table(), tmp_path / "series.csv")
    labels = _write(
        pd.DataFrame(
            {"series_uid": ["1.2.10.1", "1.2.20.1", "1.2.30.1", "1.2.10.2"], "label": [1, 0, 1, 0]}
        ),
        tmp_path / "labels.csv",
    )
    out = tmp_path / "manifest.csv"
    frame = manifest_from_dicom_labels(series, labels, key="series_uid", out=out)
    assert list(frame.columns)[:6] == [
        "case_id",
        "patient_id",
        "study_uid",
        "series_uid",
        "image",
        "label",
    ]
    assert "modality" in frame.columns and "files" not in frame.columns
    assert frame["case_id"].tolist() == frame["series_uid"].tolist()
    assert frame["study_uid"].tolist()[:2] == ["1.2.10", "1.2.10"]  # UIDs stay text, not floats
    assert frame.loc[0, "image"] == str(tmp_path.resolve() / "p1" / "s1")
    assert dict(zip(frame["series_uid"], frame["label"], strict=True))["1.2.10.2"] == 0
    written = manifest_from_csv(out, ["case_id", "patient_id", "image", "label"])
    assert written["image"].tolist() == frame["image"].tolist()


def test_dicom_labels_by_patient_label_every_series(tmp_path):
    labels = pd.DataFrame({"patient_id": ["P1", "P2"], "label": [1, 0], "sex": ["F", "M"]})
    frame = manifest_from_dicom_labels(_series_table(), labels, key="patient_id", root=tmp_path)
    assert frame.groupby("patient_id")["label"].first().to_dict() == {"P1": 1, "P2": 0}
    assert (frame["patient_id"] == "P1").sum() == 3
    assert frame["sex"].tolist() == ["F", "F", "F", "M"]
    assert frame.loc[3, "image"] == str(tmp_path.resolve() / "p2" / "s1")


def test_dicom_labels_by_study_checks_shared_columns(tmp_path):
    labels = pd.DataFrame(
        {
            "study_uid": ["1.2.10", "1.2.20", "1.2.30"],
            "patient_id": ["P1", "P1", "P2"],
            "label": [1, 0, 1],
        }
    )
    frame = manifest_from_dicom_labels(_series_table(), labels, key="study_uid")
    assert frame["label"].tolist() == [1, 1, 0, 1]
    labels.loc[2, "patient_id"] = "P9"
    with pytest.raises(
        DataError,
        match=r"<labels table> disagrees with <series table>: column 'patient_id' differs for study_uid '1.2.30'",
    ):
        manifest_from_dicom_labels(_series_table(), labels, key="study_uid")


def test_dicom_labels_refusals_list_the_ids(tmp_path):
    series = _series_table()
    repeated = pd.DataFrame({"patient_id": ["P1", "P2", "P1"], "label": [1, 0, 0]})
    with pytest.raises(
        DataError, match=r"<labels table>: column 'patient_id' has repeated values 'P1'"
    ):
        manifest_from_dicom_labels(series, repeated, key="patient_id")
    unmatched = _write(
        pd.DataFrame({"patient_id": ["P1", "P2", "P7", "P8"], "label": [1, 0, 1, 1]}),
        tmp_path / "labels.csv",
    )
    with pytest.raises(
        DataError,
        match=r"labels.csv: 2 value\(s\) of column 'patient_id' have no match in <series table>: 'P7', 'P8'",
    ):
        manifest_from_dicom_labels(series, unmatched, key="patient_id")
    partial = pd.DataFrame({"series_uid": ["1.2.10.1", "1.2.30.1"], "label": [1, 0]})
    with pytest.raises(
        DataError,
        match=r"2 value\(s\) of column 'series_uid' have no match in <labels table> \(pass unlabelled='drop'\): '1.2.10.2', '1.2.20.1'",
    ):
        manifest_from_dicom_labels(series, partial, key="series_uid")
    frame = manifest_from_dicom_labels(series, partial, key="series_uid", unlabelled="drop")
    assert frame["series_uid"].tolist() == ["1.2.10.1", "1.2.30.1"]


def test_dicom_labels_bad_tables(tmp_path):
    series = _series_table()
    labels = pd.DataFrame({"patient_id": ["P1", "P2"], "label": [1, 0]})
    with pytest.raises(DataError, match=r"<series table>: missing column\(s\) \['files'\]"):
        manifest_from_dicom_labels(series.drop(columns=["files"]), labels, key="patient_id")
    blank = series.assign(study_uid=["1.2.10", None, " ", "1.2.30"])
    with pytest.raises(DataError, match=r"column 'study_uid' is empty at position\(s\) 1, 2"):
        manifest_from_dicom_labels(blank, labels, key="patient_id")
    blank_csv = _write(blank, tmp_path / "series.csv")
    with pytest.raises(
        DataError, match=r"series.csv: column 'study_uid' is empty at CSV row\(s\) 3, 4"
    ):
        manifest_from_dicom_labels(blank_csv, labels, key="patient_id")
    with pytest.raises(DataError, match="needs a 'label' or 'mask' column"):
        manifest_from_dicom_labels(series, labels.drop(columns=["label"]), key="patient_id")
    with pytest.raises(DataError, match=r"column 'series_uid' has repeated values '1.2.10.1'"):
        manifest_from_dicom_labels(pd.concat([series, series.iloc[:1]]), labels, key="patient_id")
    with pytest.raises(DataError, match="absent.csv: labels table not found"):
        manifest_from_dicom_labels(series, tmp_path / "absent.csv", key="patient_id")
    with pytest.raises(ValueError, match="key must be one of"):
        manifest_from_dicom_labels(series, labels, key="case_id")
    with pytest.raises(ValueError, match="unlabelled must be"):
        manifest_from_dicom_labels(series, labels, key="patient_id", unlabelled="keep")


def test_dicom_labels_scan_root_and_shared_folders(tmp_path):
    scan = _series_table().assign(folder=lambda f: f["files"])
    scan.attrs["scan"] = {"root": str(tmp_path / "dicom")}
    labels = pd.DataFrame({"series_uid": ["1.2.10.1"], "label": [1]})
    frame = manifest_from_dicom_labels(scan, labels, key="series_uid", unlabelled="drop")
    assert frame.loc[0, "image"] == str(tmp_path.resolve() / "dicom" / "p1" / "s1")
    assert "folder" not in frame.columns
    scan.loc[0, "files"] = "p1/a/1.dcm;p1/a/2.dcm"
    with pytest.raises(
        DataError, match="column 'files' lists files instead of one folder .* series_uid '1.2.10.1'"
    ):
        manifest_from_dicom_labels(scan, labels, key="series_uid", unlabelled="drop")
