"""Tests for the pydicom-free header reader (medimg.data.dicom_header) against scan.py's path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medimg.data import scan
from medimg.data.dicom_header import read_header_fast
from medimg.data.scan import scan_tree

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
PLAIN_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def pydicom_header(path: Path) -> dict[str, Any] | None:
    """scan.py's header fields through its pydicom path only (the fast path switched off)."""
    with mock.patch.object(scan, "read_header_fast", lambda _: None):
        return scan._read_chunk(str(path.parent), [path.name])[0]


def assert_same(path: Path, fast: dict[str, Any]) -> None:
    """The fast fields equal pydicom's, down to key order and JSON value types."""
    slow = pydicom_header(path)
    assert fast == slow, path
    assert json.dumps(fast) == json.dumps(slow), path


def syntax_of(path: Path) -> str | None:
    """The file's transfer syntax, or None when pydicom cannot read its meta."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - any unreadable test file simply has no syntax
        return None
    return str(meta.get("TransferSyntaxUID", "")) or None


def write(path: Path, ds: Dataset, implicit: bool = False) -> Path:
    """Write ``ds`` as a DICOM file (explicit VR LE unless ``implicit``); return the path."""
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values are written on purpose
        ds.save_as(path, enforce_file_format=True)
    return path


def ct_slice(z: float = 0.0, **tags: Any) -> Dataset:
    """A small CT slice with the fields the scan reads (``tags`` set or override keywords)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1234.9.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.Manufacturer = "P1", "CT", "ACME"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1234.2"
    ds.InstanceNumber = 3
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values are set on purpose
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
    ds.PixelData = np.zeros((4, 4), dtype="<u2").tobytes()
    return ds


def referenced_images(undefined: bool) -> Sequence:
    """A two-item ReferencedImageSequence, of undefined length (items too) when asked."""
    items = []
    for k in range(2):
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = f"1.2.3.{k}"
        item.is_undefined_length_sequence_item = undefined
        items.append(item)
    sequence = Sequence(items)
    sequence.is_undefined_length = undefined
    return sequence


def test_every_pydicom_test_file_matches_or_falls_back() -> None:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    assert len(files) > 50
    fast_files, plain = [], []
    for path in files:
        fast = read_header_fast(str(path))
        if fast is not None:
            assert_same(path, fast)
            fast_files.append(path.name)
        if syntax_of(path) in PLAIN_SYNTAXES:
            plain.append(path.name)
    assert len(plain) > 20
    taken = sum(name in fast_files for name in plain)
    assert taken / len(plain) > 0.75, sorted(set(plain) - set(fast_files))
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "JPEG2000.dcm"):
        assert name in fast_files  # explicit VR LE, implicit VR LE, and encapsulated pixels


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "image_dfl.dcm"],
)
def test_big_endian_and_deflated_files_fall_back(name: str) -> None:
    path = TEST_FILES / name  # local files only: get_testdata_file may download
    assert read_header_fast(str(path)) is None
    assert pydicom_header(path) is not None  # pydicom still reads them


def test_synthetic_files_all_take_the_fast_path(data_dir: Path) -> None:
    files = sorted(data_dir.rglob("*.dcm"))[::7][:60]
    assert len(files) >= 20
    for path in files:
        fast = read_header_fast(str(path))
        assert fast is not None, path
        assert fast["image"] and fast["rows"] and fast["planes"][0][0] is not None
        assert_same(path, fast)


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("undefined", [False, True])
def test_sequences_before_the_fields_are_skipped(tmp_path: Path, implicit, undefined) -> None:
    ds = ct_slice(ReferencedImageSequence=referenced_images(undefined))
    ds.add_new(0x00091010, "LO", "ACME private")  # a private element, skipped too
    path = write(tmp_path / "slice.dcm", ds, implicit=implicit)
    fast = read_header_fast(str(path))
    assert fast is not None and fast["instance_number"] == 3
    assert_same(path, fast)


def test_values_decode_like_pydicom(tmp_path: Path) -> None:
    ds = ct_slice(
        PatientID="  P 7 ",
        Manufacturer="Ståhl",  # latin-1
        SpecificCharacterSet="ISO_IR 100",
        InstanceNumber="",
        ImagePositionPatient=["1e1", " -2.5", "nan"],
        PixelSpacing=["0.7", "0.7", "0.7"],  # wrong count
        NumberOfFrames="1",
    )
    path = write(tmp_path / "odd.dcm", ds)
    fast = read_header_fast(str(path))
    assert fast is not None
    assert fast["patient_id"] == "P 7" and fast["manufacturer"] == "Ståhl"
    assert fast["planes"][0][0] is None and fast["planes"][0][2] is None
    assert_same(path, fast)


def test_utf8_text_decodes_like_pydicom(tmp_path: Path) -> None:
    ds = ct_slice(SpecificCharacterSet="ISO_IR 192", PatientID="Jérôme", Manufacturer="東芝")
    path = write(tmp_path / "utf8.dcm", ds)
    fast = read_header_fast(str(path))
    assert fast is not None and fast["patient_id"] == "Jérôme"
    assert_same(path, fast)
    raw = path.read_bytes().replace("東芝".encode(), b"\xff\xfe\xfd\xfc\xfb\xfa")
    path.write_bytes(raw)  # not UTF-8: pydicom decodes with replacement characters
    assert read_header_fast(str(path)) is None


def test_radiograph_without_position_uses_imager_pixel_spacing(tmp_path: Path) -> None:
    ds = ct_slice(Modality="DX", ImagerPixelSpacing=[0.1, 0.2])
    del ds.ImagePositionPatient, ds.PixelSpacing
    path = write(tmp_path / "dx.dcm", ds, implicit=True)
    fast = read_header_fast(str(path))
    assert fast is not None and fast["planes"][0][2] == [0.1, 0.2]
    assert_same(path, fast)


def test_file_without_pixel_data(tmp_path: Path) -> None:
    ds = ct_slice()
    del ds.PixelData, ds.Rows, ds.Columns
    path = write(tmp_path / "sr.dcm", ds)
    fast = read_header_fast(str(path))
    assert fast is not None and fast["image"] is False
    assert_same(path, fast)


@pytest.mark.parametrize(
    "tags",
    [
        {"SpecificCharacterSet": "ISO 2022 IR 87", "PatientID": "P1"},
        {"SpecificCharacterSet": ["ISO_IR 100", "ISO_IR 192"], "PatientID": "P1"},
        {"PatientID": "A\\B"},  # pydicom makes a MultiValue of it
    ],
)
def test_values_pydicom_decodes_specially_fall_back(tmp_path: Path, tags) -> None:
    path = write(tmp_path / "special.dcm", ct_slice(**tags))
    assert read_header_fast(str(path)) is None


def test_enhanced_multiframe_falls_back(tmp_path: Path) -> None:
    ds = ct_slice(SOPClassUID=EnhancedCTImageStorage, NumberOfFrames=1)
    frame = Dataset()
    frame.PlanePositionSequence = Sequence([Dataset()])
    frame.PlanePositionSequence[0].ImagePositionPatient = [0, 0, 0]
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    path = write(tmp_path / "enhanced.dcm", ds)
    assert read_header_fast(str(path)) is None


def test_truncated_and_non_dicom_files_fall_back(tmp_path: Path) -> None:
    data = write(tmp_path / "whole.dcm", ct_slice()).read_bytes()
    cut = data.index(b"\xe0\x7f\x10\x00")  # the pixel data tag
    for size in (100, 140, 300, cut - 3, cut):
        path = tmp_path / f"cut{size}.dcm"
        path.write_bytes(data[:size])
        assert read_header_fast(str(path)) is None, size
    partial = tmp_path / "partial_pixels.dcm"
    partial.write_bytes(data[: cut + 20])  # the pixel element starts: pydicom calls it an image
    fast = read_header_fast(str(partial))
    assert fast is not None and fast["image"]
    assert_same(partial, fast)
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    assert read_header_fast(str(text)) is None
    assert read_header_fast(str(tmp_path / "missing.dcm")) is None


def test_scan_tree_is_unchanged_by_the_fast_path(data_dir: Path, tmp_path: Path) -> None:
    root = next(data_dir.glob("synthetic_ct-*"))  # not the prepared-case cache beside it
    fast = scan_tree(root, index_path=tmp_path / "fast.json", workers=1)
    with mock.patch.object(scan, "read_header_fast", lambda _: None):
        slow = scan_tree(root, index_path=tmp_path / "slow.json", workers=1)
    assert len(fast) > 0 and fast.attrs["scan"]["read"] > 20
    pd.testing.assert_frame_equal(fast, slow)
    assert (tmp_path / "fast.json").read_text() == (tmp_path / "slow.json").read_text()
