"""Tests for the header-only DICOM tree scanner (medimg.data.scan)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian

from medimg.data import scan
from medimg.data.scan import LEGACY_INDEX_NAME, SCAN_COLUMNS, axis_codes, scan_tree, write_scan

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
UID = {name: f"1.2.826.0.1.3680043.10.1234.{i}" for i, name in enumerate("ABCDEFGH", start=1)}


def _dataset(series: str, patient: str = "P1", rows: int = 4, columns: int = 4) -> Dataset:
    """A minimal CT-like dataset of ``series`` (pixel data and geometry are added by callers)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.PatientID = patient
    ds.StudyInstanceUID = f"{UID[series]}.0"
    ds.SeriesInstanceUID = UID[series]
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_slice(
    path: Path,
    series: str,
    z: float,
    orientation: tuple[float, ...] = AXIAL,
    instance: int = 1,
    geometry: bool = True,
) -> Path:
    """Write one single-frame slice at depth ``z`` along the slice normal."""
    ds = _dataset(series)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID[series]}.{instance}"
    ds.InstanceNumber = instance
    if geometry:
        normal = np.cross(orientation[:3], orientation[3:6])
        ds.ImagePositionPatient = [float(v) for v in normal * z]
        ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = np.full((4, 4), instance, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, series: str, depths, **kwargs) -> list[Path]:
    """Write one slice per depth into ``folder`` as 0000.dcm, 0001.dcm, ..."""
    return [
        write_slice(folder / f"{k:04d}.dcm", series, z, instance=k + 1, **kwargs)
        for k, z in enumerate(depths)
    ]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A small DICOM tree covering the layouts the scanner must tell apart."""
    root = tmp_path / "tree"
    write_series(root / "p1" / "ct", "A", [0.0, 2.5, 5.0, 7.5, 10.0])
    write_series(root / "p1" / "sag", "B", [0.0, 1.0, 2.0, 3.0], orientation=SAGITTAL)
    write_series(root / "mixed", "C", [0.0, 3.0, 6.0])
    for k, z in enumerate([0.0, 1.0, 2.0]):
        write_slice(root / "mixed" / f"d{k}.dcm", "D", z, instance=k + 1)
    write_series(root / "nested" / "a" / "b", "E", [0.0, 1.5, 3.0])
    write_series(root / "split" / "part1", "F", [0.0, 2.0])
    write_slice(root / "split" / "part2" / "0002.dcm", "F", 4.0, instance=3)
    write_slice(root / "split" / "part2" / "0003.dcm", "F", 6.0, instance=4)
    write_series(root / "gap", "G", [0.0, 1.0, 2.0, 4.0, 5.0])  # slice at 3.0 missing
    (root / "README.txt").write_text("not a DICOM file\n")
    (root / "mixed" / "notes.txt").write_bytes(b"\0" * 200)
    return root


def row_of(frame: pd.DataFrame, series: str) -> pd.Series:
    """The scan row of one series."""
    rows = frame[frame["series_uid"] == UID[series]]
    assert len(rows) == 1, f"{series}: {len(rows)} rows"
    return rows.iloc[0]


def test_one_row_per_series_with_header_fields(tree: Path) -> None:
    frame = scan_tree(tree, workers=1)
    assert tuple(frame.columns) == SCAN_COLUMNS
    assert sorted(frame["series_uid"]) == sorted(UID[s] for s in "ABCDEFG")
    axial = row_of(frame, "A")
    assert axial.to_dict() == {
        "patient_id": "P1",
        "study_uid": f"{UID['A']}.0",
        "series_uid": UID["A"],
        "modality": "CT",
        "manufacturer": "ACME",
        "orientation": "LPS",
        "n_files": 5,
        "n_slices": 5,
        "rows": 4,
        "columns": 4,
        "pixel_spacing": "0.7\\0.7",
        "slice_spacing": 2.5,
        "status": "ok",
        "folder": "p1/ct",
        "files": "p1/ct",
    }
    assert row_of(frame, "B")["orientation"] == "PIR"
    assert row_of(frame, "B")["slice_spacing"] == 1.0
    assert frame.attrs["scan"]["skipped"] == 2  # README.txt and notes.txt
    assert frame.attrs["scan"]["files"] == 27 + 2


def test_nested_and_split_series(tree: Path) -> None:
    frame = scan_tree(tree, workers=1)
    nested = row_of(frame, "E")
    assert (nested["folder"], nested["files"], nested["status"]) == ("nested/a/b",) * 2 + ("ok",)
    split = row_of(frame, "F")
    assert split["folder"] == "split"
    assert split["files"].split(";") == [
        "split/part1/0000.dcm",
        "split/part1/0001.dcm",
        "split/part2/0002.dcm",
        "split/part2/0003.dcm",
    ]
    assert split["status"] == "ok"


def test_series_sharing_a_folder_are_flagged(tree: Path) -> None:
    frame = scan_tree(tree, workers=1)
    c, d = row_of(frame, "C"), row_of(frame, "D")
    assert c["status"] == f"shares folder mixed with series {UID['D']}"
    assert d["status"] == f"shares folder mixed with series {UID['C']}"
    assert c["folder"] == d["folder"] == "mixed"
    assert c["files"] == "mixed/0000.dcm;mixed/0001.dcm;mixed/0002.dcm"
    assert d["files"] == "mixed/d0.dcm;mixed/d1.dcm;mixed/d2.dcm"


def test_geometry_status_comes_from_series_status(tree: Path) -> None:
    gap = row_of(scan_tree(tree, workers=1), "G")
    assert gap["status"].startswith("missing slices: 1 slice(s) missing")
    assert gap["slice_spacing"] == 1.0  # median step


def test_results_are_deterministic_and_parallel_equals_serial(tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(scan, "_INLINE_BELOW", 0)  # use the process pool even for a tiny tree
    serial = scan_tree(tree, index_path=tree.parent / "serial.json", workers=1)
    parallel = scan_tree(tree, index_path=tree.parent / "parallel.json", workers=2)
    again = scan_tree(tree, index_path=tree.parent / "parallel.json", workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(serial, again)
    assert list(serial["folder"]) == sorted(serial["folder"])
    assert (tree.parent / "parallel.json").read_text() == (tree.parent / "serial.json").read_text()
    assert not (tree / LEGACY_INDEX_NAME).exists()


class _CountReads:
    """Counts DICOM header reads (fast path or pydicom) made in this process."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        real = scan._read_header

        def counting(path):
            header = real(path)
            self.calls += header is not None
            return header

        monkeypatch.setattr(scan, "_read_header", counting)


def _tree_files(tree: Path) -> list[str]:
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))


def test_rescan_reads_only_changed_files(tree: Path, monkeypatch) -> None:
    reads = _CountReads(monkeypatch)
    index_path = tree.parent / "index.json"
    first = scan_tree(tree, index_path=index_path, workers=1)
    assert reads.calls == 27 and first.attrs["scan"]["read"] == 27 + 2  # 2 text files, no parse
    reads.calls = 0
    unchanged = scan_tree(tree, index_path=index_path, workers=1)
    assert reads.calls == 0 and unchanged.attrs["scan"]["read"] == 0
    pd.testing.assert_frame_equal(first, unchanged)

    write_slice(tree / "p1" / "ct" / "0005.dcm", "A", 12.5, instance=6)  # added
    (tree / "nested" / "a" / "b" / "0002.dcm").unlink()  # removed
    touched = tree / "p1" / "sag" / "0000.dcm"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    reads.calls = 0
    changed = scan_tree(tree, index_path=index_path, workers=1)
    assert reads.calls == 2  # the added and the touched file
    assert row_of(changed, "A")["n_files"] == 6
    assert row_of(changed, "E")["n_files"] == 2
    index = json.loads(index_path.read_text())
    assert "nested/a/b/0002.dcm" not in index["files"]
    assert "p1/ct/0005.dcm" in index["files"]


def test_unchanged_tree_never_reaches_the_header_reader(tree: Path, monkeypatch) -> None:
    scan_tree(tree, index_path=tree.parent / "index.json", workers=2)

    def refuse(path: str) -> None:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(scan, "_read_header", refuse)
    assert len(scan_tree(tree, index_path=tree.parent / "index.json", workers=2)) == 7


def test_without_an_index_every_header_is_read_and_nothing_is_written(
    tree: Path, monkeypatch
) -> None:
    before = _tree_files(tree)
    outside = sorted(tree.parent.iterdir())
    reads = _CountReads(monkeypatch)
    scan_tree(tree, workers=1)
    scan_tree(tree, workers=1)
    assert reads.calls == 2 * 27
    assert _tree_files(tree) == before and sorted(tree.parent.iterdir()) == outside


def test_an_index_left_in_the_tree_by_an_older_medimg_is_not_scanned(tree: Path) -> None:
    files = scan_tree(tree, workers=1).attrs["scan"]["files"]
    (tree / LEGACY_INDEX_NAME).write_text('{"format": "medimg-scan-index/1", "files": {}}')
    assert scan_tree(tree, workers=1).attrs["scan"]["files"] == files


def test_index_is_plain_json(tree: Path) -> None:
    scan_tree(tree, index_path=tree.parent / "index.json", workers=1)
    payload = json.loads((tree.parent / "index.json").read_text())
    assert payload["format"] == scan.INDEX_FORMAT
    entry = payload["files"]["p1/ct/0000.dcm"]
    assert set(entry) == {"size", "mtime_ns", "header"}
    assert entry["size"] == (tree / "p1" / "ct" / "0000.dcm").stat().st_size
    assert entry["header"]["series_uid"] == UID["A"]
    assert entry["header"]["planes"] == [[[0.0, 0.0, 0.0], list(AXIAL), [0.7, 0.7]]]
    assert payload["files"]["README.txt"]["header"] is None
    assert not [p for p in tree.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "scan index unreadable"),
        ("[]", "scan index is not medimg-scan-index/1"),
        ('{"format": "medimg-scan-index/0", "files": {}}', "scan index is not"),
        ('{"format": "medimg-scan-index/1", "files": []}', "scan index is not"),
    ],
)
def test_unusable_index_is_rebuilt(tree: Path, caplog, text: str, message: str) -> None:
    index_path = tree.parent / "index.json"
    index_path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="medimg.data.scan"):
        frame = scan_tree(tree, index_path=index_path, workers=1)
    assert message in caplog.text
    assert frame.attrs["scan"]["read"] == 29
    assert json.loads(index_path.read_text())["format"] == scan.INDEX_FORMAT


def test_unwritable_index_raises_and_no_index_writes_nothing(tree: Path, monkeypatch) -> None:
    def read_only(path, write):
        raise PermissionError(f"{path}: read-only file system")

    monkeypatch.setattr(scan, "write_atomic", read_only)
    assert len(scan_tree(tree, workers=1)) == 7  # no index asked for: nothing to write
    with pytest.raises(PermissionError, match="read-only"):
        scan_tree(tree, index_path=tree.parent / "index.json", workers=1)


def test_files_that_are_not_dicom_or_broken(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_series(root / "s", "A", [0.0, 1.0])
    shutil.copy(get_testdata_file("no_meta.dcm"), root / "s" / "raw.dcm")  # no preamble
    (root / "s" / "broken.dcm").write_bytes((root / "s" / "0000.dcm").read_bytes()[:-40])
    frame = scan_tree(root, workers=1)
    assert frame.attrs["scan"]["skipped"] == 1
    assert frame.attrs["scan"]["unreadable"] == ["s/broken.dcm"]  # truncated in pixel data
    assert row_of(frame, "A")["status"] == "folder s holds 1 unreadable DICOM file(s)"


def test_enhanced_multiframe_counts_frames(tmp_path: Path) -> None:
    ds = _dataset("H")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID['H']}.1"
    ds.NumberOfFrames = 3
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = [0.5, 0.5]
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in (0.0, 3.0, 6.0):
        plane, item = Dataset(), Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, z]
        item.PlanePositionSequence = Sequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.zeros((3, 4, 4), dtype="<u2").tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "volume.dcm", enforce_file_format=True)
    row = row_of(scan_tree(tmp_path / "mf", workers=1), "H")
    assert (row["n_files"], row["n_slices"], row["slice_spacing"]) == (1, 3, 3.0)
    assert (row["pixel_spacing"], row["orientation"], row["status"]) == ("0.5\\0.5", "LPS", "ok")


def test_projection_and_non_image_series(tmp_path: Path) -> None:
    write_slice(tmp_path / "cr" / "one.dcm", "A", 0.0, geometry=False)
    write_series(tmp_path / "cr2", "B", [0.0, 1.0], geometry=False)
    report = _dataset("C")
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored"):
        delattr(report, keyword)
    report.Modality = "SR"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = f"{UID['C']}.1"
    report.save_as(tmp_path / "cr2" / "report.dcm", enforce_file_format=True)
    frame = scan_tree(tmp_path, workers=1)
    projection = row_of(frame, "A")
    assert (projection["status"], projection["orientation"]) == ("ok", "")
    assert math.isnan(projection["slice_spacing"])
    assert row_of(frame, "B")["status"].startswith("2 images without ImagePositionPatient")
    assert row_of(frame, "B")["files"] == "cr2"  # the report beside it is no image: not counted
    sr = row_of(frame, "C")
    assert (sr["status"], sr["n_slices"]) == ("no pixel data (not an image series)", 0)


def test_write_scan_round_trips(tree: Path, tmp_path: Path) -> None:
    frame = scan_tree(tree, workers=1)
    out = write_scan(frame, tmp_path / "out" / "series.csv")
    back = pd.read_csv(out, dtype={"patient_id": str, "study_uid": str, "series_uid": str})
    assert list(back.columns) == list(SCAN_COLUMNS)
    assert back["status"].tolist() == frame["status"].tolist()
    assert [p.name for p in out.parent.iterdir()] == ["series.csv"]


def test_empty_tree_gives_empty_table(tmp_path: Path) -> None:
    frame = scan_tree(tmp_path, workers=1)
    assert frame.empty and tuple(frame.columns) == SCAN_COLUMNS


@pytest.mark.parametrize(
    ("orientation", "codes"),
    [
        (AXIAL, "LPS"),
        (SAGITTAL, "PIR"),
        ((1, 0, 0, 0, 0, -1), "LIP"),
        ((-1, 0, 0, 0, -1, 0), "RAS"),
        ((math.cos(0.01), math.sin(0.01), 0, -math.sin(0.01), math.cos(0.01), 0), "LPS"),
        ((math.cos(0.2), math.sin(0.2), 0, -math.sin(0.2), math.cos(0.2), 0), "oblique"),
        ((0, 0, 0, 0, 1, 0), "invalid"),
    ],
)
def test_axis_codes(orientation, codes) -> None:
    assert axis_codes(orientation) == codes


def test_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing: scan root does not exist"):
        scan_tree(tmp_path / "missing")


def test_file_as_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="file.txt: scan root is not a folder"):
        scan_tree(tmp_path / "file.txt")


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_is_refused(tmp_path: Path, workers) -> None:
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        scan_tree(tmp_path, workers=workers)


def test_built_in_dataset_scans_clean(data_dir: Path, manifests: dict, tmp_path: Path) -> None:
    frame = scan_tree(data_dir, index_path=tmp_path / "index.json", workers=2)
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", "status"].tolist()
    by_folder = frame.set_index("files")
    for manifest in manifests.values():
        cases = pd.read_csv(manifest, dtype={"patient_id": str})
        for case in cases.itertuples():
            folder = (manifest.parent / case.image).relative_to(data_dir).as_posix()
            row = by_folder.loc[folder]
            assert (row["patient_id"], row["manufacturer"]) == (case.patient_id, case.manufacturer)
    assert not (data_dir / LEGACY_INDEX_NAME).exists()
