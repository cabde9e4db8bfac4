"""Every refused DICOM input raises the documented error type naming the source and specifics."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from medimg.data.dicom import read_dicom_series
from medimg.data.errors import DataError
from medimg.data.geometry import GeometryError, SliceHeader, series_status, sort_and_check
from medimg.data.image import read_image
from tests.dicom_factory import write_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _geometry_error(folder: Path, **faults) -> GeometryError:
    """Write a 7-slice axial series (2.5 mm steps from z = 30 mm) with faults and read it."""
    write_series(folder, **faults)
    with pytest.raises(GeometryError) as caught:
        read_dicom_series(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: ") and "\n" not in message
    return caught.value


def test_several_series_lists_every_uid(tmp_path):
    written = write_series(tmp_path / "mixed", second_series=(1, 4))
    with pytest.raises(GeometryError) as caught:
        read_dicom_series(tmp_path / "mixed")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'mixed'}: 2 series mixed together")
    assert f"{written.series_uids[0]} (5 slices)" in message
    assert f"{written.series_uids[1]} (2 slices)" in message


def test_missing_slice_says_where_and_how_many(tmp_path):
    error = _geometry_error(tmp_path / "gap", drop=(3,))
    assert "missing slices: 1 slice(s) missing in 1 gap(s)" in str(error)
    assert "after slice 2 (0002.dcm (instance 3) at 35.000 mm)" in str(error)
    assert "before slice 3 (0003.dcm (instance 4) at 40.000 mm), gap 5.000 mm" in str(error)


def test_several_missing_slices_are_counted(tmp_path):
    error = _geometry_error(tmp_path / "gaps", drop=(2, 3, 5))
    assert "missing slices: 3 slice(s) missing in 2 gap(s) (typical step 2.500 mm" in str(error)
    assert "2 missing after slice 1" in str(error) and "1 missing after slice 2" in str(error)


def test_non_uniform_spacing_reports_max_deviation(tmp_path):
    error = _geometry_error(tmp_path / "jitter", jitter=(3, 0.3))
    assert "non-uniform slice spacing: steps from 2.200 to 2.800 mm (mean 2.500 mm)" in str(error)
    assert "max deviation 0.300 mm" in str(error)


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_gantry_tilt_reports_angle_and_is_refused(tmp_path, orientation):
    error = _geometry_error(tmp_path / "tilt", orientation=orientation, tilt_degrees=12.0)
    assert "not along the slice normal: gantry tilt or sheared stack of 12.00°" in str(error)
    assert "along columns" in str(error) and "tilted stacks are refused" in str(error)


def test_inconsistent_orientation_names_the_slice(tmp_path):
    error = _geometry_error(tmp_path / "turned", rotate_slice=(2, 5.0))
    assert "inconsistent ImageOrientationPatient between slices: 0002.dcm" in str(error)
    assert "rotated 5.00°" in str(error) and "other 6 slice(s)" in str(error)


def test_inconsistent_pixel_spacing_names_the_slice(tmp_path):
    error = _geometry_error(tmp_path / "spacing", pixel_spacing_of=(4, (0.8, 1.0)))
    assert "inconsistent PixelSpacing between slices: 0004.dcm (instance 5) has [0.8, 1]" in str(
        error
    )
    assert "have [0.8, 0.9]" in str(error)


def test_inconsistent_image_size_names_the_slice(tmp_path):
    written = write_series(tmp_path / "size", shape=(4, 3, 3))
    ds = pydicom.dcmread(written.paths[1])
    ds.Rows, ds.PixelData = 2, ds.PixelData[: 2 * 4 * 2]
    ds.save_as(written.paths[1])
    with pytest.raises(GeometryError, match=r"inconsistent image size .*0001\.dcm .* has 2x4"):
        read_dicom_series(tmp_path / "size")


def test_duplicate_positions_name_both_files(tmp_path):
    error = _geometry_error(tmp_path / "dup", duplicate=3)
    assert "duplicate slice positions: 1 pair(s)" in str(error)
    assert "0002.dcm (instance 3) and 0003.dcm (instance 4) at 35.000 mm" in str(error)


@pytest.mark.parametrize("content", [None, "readme"], ids=["empty", "text-only"])
def test_folder_without_dicom_images(tmp_path, content):
    folder = tmp_path / "nothing"
    folder.mkdir()
    if content:
        (folder / "README").write_text("no images here\n")
        (folder / "notes.txt").write_text("still none\n")
    with pytest.raises(DataError, match=rf"^{folder}: no DICOM images in folder"):
        read_dicom_series(folder)


def test_listed_non_dicom_file_is_refused(tmp_path):
    written = write_series(tmp_path / "s", shape=(4, 3, 2))
    readme = tmp_path / "s" / "README"
    readme.write_text("not DICOM\n")
    with pytest.raises(DataError, match=rf"^{readme}: not a DICOM file"):
        read_dicom_series([*written.paths, readme])


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path / 'gone'}: no such DICOM file or folder"):
        read_image(tmp_path / "gone")
    with pytest.raises(DataError, match=r"gone\.nii\.gz: NIfTI file not found"):
        read_image(tmp_path / "gone.nii.gz")


def test_slice_without_position_among_positioned_slices(tmp_path):
    written = write_series(tmp_path / "s", shape=(4, 3, 3))
    ds = pydicom.dcmread(written.paths[2])
    del ds.ImagePositionPatient
    ds.save_as(written.paths[2])
    with pytest.raises(DataError, match=r"0002\.dcm: no ImagePositionPatient while 2 other"):
        read_dicom_series(tmp_path / "s")


def test_malformed_position_names_file_and_field(tmp_path):
    written = write_series(tmp_path / "s", shape=(4, 3, 2))
    ds = pydicom.dcmread(written.paths[0])
    ds.ImagePositionPatient = ["1", "2"]
    ds.save_as(written.paths[0])
    with pytest.raises(DataError, match=r"0000\.dcm: ImagePositionPatient must be 3 finite"):
        read_dicom_series(tmp_path / "s")


def test_several_projection_images_are_not_stacked(tmp_path):
    written = write_series(tmp_path / "dx", shape=(4, 3, 2))
    for path in written.paths:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.save_as(path)
    with pytest.raises(DataError, match=r"2 images without ImagePositionPatient .* one file"):
        read_dicom_series(tmp_path / "dx")


def _jpeg2000_file(tmp_path: Path) -> Path:
    """A one-slice series whose pixel data claims JPEG 2000 but holds garbage."""
    written = write_series(tmp_path / "j2k", shape=(4, 3, 1))
    ds = pydicom.dcmread(written.paths[0])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00not a jpeg 2000 codestream\x00" * 4])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(written.paths[0], enforce_file_format=True)
    return written.paths[0]


def test_missing_decoder_names_file_syntax_and_packages(tmp_path, monkeypatch):
    path = _jpeg2000_file(tmp_path)
    # Make the test independent of which decoders happen to be installed (pillow decodes J2K).
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    with pytest.raises(DataError) as caught:
        read_dicom_series(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: no decoder installed for transfer syntax")
    assert "'JPEG 2000 Image Compression (Lossless Only)' (1.2.840.10008.1.2.4.90)" in message
    assert "install one of: pylibjpeg + pylibjpeg-openjpeg" in message
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_missing_decoder_on_real_jpeg_ls_file(monkeypatch):
    path = PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm"
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    with pytest.raises(
        DataError, match=r"JPEG-LS Lossless Image Compression.*install one of: pyjpegls"
    ):
        read_dicom_series(path)


def test_undecodable_pixel_data_names_file_and_syntax(tmp_path):
    path = _jpeg2000_file(tmp_path)
    if not get_decoder(JPEG2000Lossless).is_available:  # pragma: no cover - pillow is a dependency
        pytest.fail("pillow should provide a JPEG 2000 decoder")
    with pytest.raises(DataError, match=rf"^{path}: cannot decode pixel data with transfer syntax"):
        read_dicom_series(path)


def _header(z: float, **changes) -> SliceHeader:
    """An axial 4x3 slice at height ``z``."""
    fields = {
        "path": f"dir/{z:g}.dcm",
        "series_uid": "1.2.3",
        "position": (0.0, 0.0, z),
        "orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "pixel_spacing": (0.5, 0.5),
        "rows": 4,
        "columns": 3,
    }
    fields.update(changes)
    return SliceHeader(**fields)


STATUS_CASES = {
    "several series": ([_header(0), _header(1, series_uid="9.9")], "2 series mixed together"),
    "duplicate": ([_header(0), _header(1), _header(1)], "duplicate slice positions"),
    "gap": ([_header(z) for z in (0, 1, 2, 4, 5)], "missing slices: 1 slice(s) missing"),
    "tilt": ([_header(z, position=(0, z * 0.5, z)) for z in range(4)], "26.57°"),
    "uneven": ([_header(z) for z in (0, 1, 2.2, 3)], "max deviation 0.200 mm"),
    "no slices": ([], "no slices"),
}


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_series_status_is_the_one_line_problem(case):
    headers, expected = STATUS_CASES[case]
    status = series_status(headers)
    assert expected in status and "\n" not in status
    with pytest.raises(GeometryError) as caught:
        sort_and_check(headers, "some/folder")
    assert str(caught.value) == f"some/folder: {status}"
    assert caught.value.problem == status


def test_geometry_error_pickles_and_tolerance_is_checked():
    error = pickle.loads(pickle.dumps(GeometryError("src: problem", "problem")))
    assert str(error) == "src: problem" and error.problem == "problem"
    assert isinstance(error, DataError) and isinstance(error, ValueError)
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        sort_and_check([_header(0)], "x", tolerance=0)
    within = [_header(z) for z in (0.0, 1.0, 2.004, 3.0)]  # 4 µm off: inside 1 % of 1 mm
    assert np.isclose(sort_and_check(within, "x").slice_spacing, 1.0)
