"""DICOM series reading: world geometry against dcm2niix, multi-frame, intensities, NIfTI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from medimg.data.dicom import read_dicom_series
from medimg.data.geometry import SliceHeader, series_status, sort_and_check
from medimg.data.image import Image, read_image
from tests.dicom_factory import write_multiframe, write_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
ORIENTATIONS = ("axial", "sagittal", "coronal", "oblique")


def _dcm2niix(series: Path, out: Path) -> nib.Nifti1Image:
    """Convert a series folder with dcm2niix, keeping its geometry (no crop, no merge)."""
    if shutil.which("dcm2niix") is None:
        pytest.fail("dcm2niix is not installed (Debian package dcm2niix)")
    out.mkdir()
    command = ["dcm2niix", "-z", "n", "-f", "out", "-o", str(out), "-b", "n"]
    command += ["-i", "n", "-m", "n", "-x", "n", "-l", "o", "-d", "0", str(series)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    (nifti,) = out.glob("*.nii")
    return nib.load(str(nifti))


def _assert_same_voxels(ours: np.ndarray, our_affine, theirs: np.ndarray, their_affine) -> None:
    """Every voxel of ours maps onto one voxel of theirs: same world position, same value.

    ``inv(their_affine) @ our_affine`` sends our voxel indices to theirs; they must land on
    integers (1e-3 voxel), cover their grid one to one, sit within 0.01 mm of ours in the
    world, and hold the same value.
    """
    assert ours.size == theirs.size
    to_theirs = np.linalg.inv(their_affine) @ our_affine
    ijk = np.indices(ours.shape).reshape(3, -1).astype(np.float64)
    index = to_theirs[:3, :3] @ ijk + to_theirs[:3, 3:]
    rounded = np.rint(index)
    assert np.abs(index - rounded).max() < 1e-3
    target = rounded.astype(np.int64)
    assert (target >= 0).all() and (target < np.array(theirs.shape)[:, None]).all()
    flat = np.ravel_multi_index(tuple(target), theirs.shape)
    assert np.unique(flat).size == ours.size
    world_ours = our_affine[:3, :3] @ ijk + our_affine[:3, 3:]
    world_theirs = their_affine[:3, :3] @ target + their_affine[:3, 3:]
    assert np.abs(world_ours - world_theirs).max() < 0.01
    np.testing.assert_array_equal(ours.reshape(-1), theirs[tuple(target)])


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_world_geometry_matches_dcm2niix(tmp_path, orientation, descending):
    written = write_series(
        tmp_path / "series", shape=(13, 10, 7), orientation=orientation, descending=descending
    )
    array, affine, meta = read_dicom_series(tmp_path / "series")
    assert array.shape == (13, 10, 7) and array.dtype == np.float32
    np.testing.assert_allclose(affine, written.affine, atol=1e-6)
    np.testing.assert_array_equal(array, written.expected())
    reference = _dcm2niix(tmp_path / "series", tmp_path / "nifti")
    their_array = np.asarray(reference.get_fdata())
    _assert_same_voxels(array, affine, their_array, reference.affine)
    ours_ras = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    theirs_ras = nib.as_closest_canonical(nib.Nifti1Image(their_array, reference.affine))
    np.testing.assert_allclose(ours_ras.affine, theirs_ras.affine, atol=0.01)
    np.testing.assert_array_equal(ours_ras.get_fdata(), theirs_ras.get_fdata())
    assert meta["orientation"] == "".join(nib.aff2axcodes(affine))


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_multiframe_equals_single_frames(tmp_path, orientation):
    kwargs = {"shape": (9, 11, 6), "orientation": orientation, "slope": 2.0, "intercept": -7.0}
    write_series(tmp_path / "single", **kwargs)
    written = write_multiframe(tmp_path / "enhanced" / "ct.dcm", descending=True, **kwargs)
    single, single_affine, _ = read_dicom_series(tmp_path / "single")
    multi, multi_affine, meta = read_dicom_series(written.paths[0])
    np.testing.assert_array_equal(multi, single)
    np.testing.assert_allclose(multi_affine, single_affine, atol=1e-6)
    np.testing.assert_array_equal(multi, written.expected(2.0, -7.0))
    assert meta["multiframe"] and meta["n_slices"] == 6 and meta["rescale_type"] == "HU"


def test_monochrome1_is_inverted_before_rescale(tmp_path):
    values = np.random.default_rng(1).integers(0, 4096, (8, 6, 3))
    write_series(
        tmp_path / "s",
        shape=(8, 6, 3),
        values=values,
        slope=2.0,
        intercept=-5.0,
        photometric="MONOCHROME1",
        bits_stored=12,
    )
    array, _, meta = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(array, ((4095 - values) * 2.0 - 5.0).astype(np.float32))
    assert meta["inverted"] and meta["photometric"] == "MONOCHROME1"


def test_rescale_per_slice_and_signed_values(tmp_path):
    values = np.random.default_rng(2).integers(-2000, 3000, (5, 4, 3))
    written = write_series(tmp_path / "s", shape=(5, 4, 3), values=values, slope=0.5, intercept=3)
    ds = pydicom.dcmread(written.paths[1])
    ds.RescaleSlope, ds.RescaleIntercept = "4", "-100"
    ds.save_as(written.paths[1])
    array, _, meta = read_dicom_series(tmp_path / "s")
    expected = values * 0.5 + 3.0
    expected[:, :, 1] = values[:, :, 1] * 4.0 - 100.0
    np.testing.assert_array_equal(array, expected.astype(np.float32))
    assert meta["rescale_applied"] and meta["rescale_slope"] is None


@pytest.mark.parametrize(
    ("bits_stored", "signed"), [(16, False), (12, False), (16, True), (12, True)]
)
def test_native_pixels_equal_pydicom_pixel_array(tmp_path, bits_stored, signed):
    low, high = (
        (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1)) if signed else (0, 2**bits_stored)
    )
    values = np.random.default_rng(3).integers(low, high, (6, 5, 2))
    values[0, 0, 0] = low  # force the signed dtype
    written = write_series(
        tmp_path / "s", shape=(6, 5, 2), values=values, bits_stored=bits_stored, intercept=0.0
    )
    path = written.paths[0]
    ds = pydicom.dcmread(path)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    if bits_stored < 16:
        raw[1::2] |= np.uint16(0xF000)  # junk in the unused high bits
    ds.PixelData = raw.tobytes()
    ds.save_as(path)
    array, _, _ = read_dicom_series([path])
    np.testing.assert_array_equal(array[:, :, 0], pydicom.dcmread(path).pixel_array.T)
    np.testing.assert_array_equal(array[:, :, 0], values[:, :, 0])


def test_single_slice_uses_slice_thickness_then_1mm(tmp_path):
    written = write_series(tmp_path / "one", shape=(6, 5, 1), slice_thickness=3.0)
    array, affine, meta = read_dicom_series(tmp_path / "one")
    assert array.shape == (6, 5, 1) and meta["geometry"] == "single-slice"
    assert meta["slice_spacing_source"] == "SliceThickness" and meta["slice_spacing"] == 3.0
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 2]), 3.0)
    ds = pydicom.dcmread(written.paths[0])
    del ds.SliceThickness
    ds.save_as(written.paths[0])
    _, affine, meta = read_dicom_series(written.paths[0])
    assert meta["slice_spacing_source"] == "default 1 mm"
    np.testing.assert_allclose(affine[:3, 2], [0.0, 0.0, 1.0])


def test_pydicom_ct_small_single_slice():
    array, affine, meta = read_dicom_series(PYDICOM_FILES / "CT_small.dcm")
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    expected = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(array[:, :, 0], expected.astype(np.float32))
    origin = np.array([-1, -1, 1]) * np.array(ds.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(affine[:3, 3], origin)
    assert meta["modality"] == "CT" and meta["n_slices"] == 1
    assert not any(isinstance(v, str) and "1.3.6.1" in v for v in meta.values())  # no UIDs


def test_projection_image_without_geometry(tmp_path):
    written = write_series(tmp_path / "dx", shape=(7, 5, 1))
    ds = pydicom.dcmread(written.paths[0])
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, keyword)
    ds.Modality, ds.ImagerPixelSpacing = "DX", ["0.2", "0.3"]
    ds.save_as(written.paths[0])
    array, affine, meta = read_dicom_series(written.paths[0])
    assert array.shape == (7, 5, 1) and meta["geometry"] == "2d-projection"
    assert meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    np.testing.assert_allclose(affine, np.diag([-0.3, -0.2, 1.0, 1.0]))
    np.testing.assert_array_equal(array, written.expected())


@pytest.mark.parametrize(
    ("name", "syntax"),
    [("MR_small_jp2klossless.dcm", JPEG2000Lossless), ("MR_small_RLE.dcm", RLELossless)],
)
def test_compressed_decodes_like_uncompressed(name, syntax):
    compressed, affine, meta = read_dicom_series(PYDICOM_FILES / name)
    plain, plain_affine, _ = read_dicom_series(PYDICOM_FILES / "MR_small.dcm")
    np.testing.assert_array_equal(compressed, plain)
    np.testing.assert_allclose(affine, plain_affine)
    assert meta["transfer_syntax"] == syntax.name


def test_folder_skips_non_dicom_files(tmp_path):
    written = write_series(tmp_path / "s", shape=(4, 3, 3))
    (tmp_path / "s" / "README.txt").write_text("not DICOM\n")
    directory = pydicom.Dataset()
    directory.file_meta = pydicom.dataset.FileMetaDataset()
    directory.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    directory.file_meta.MediaStorageSOPClassUID = pydicom.uid.MediaStorageDirectoryStorage
    directory.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    directory.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
    array, _, _ = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(array, written.expected())
    listed, _, _ = read_dicom_series(list(reversed(written.paths)))
    np.testing.assert_array_equal(listed, array)


def test_geometry_sorting_and_status():
    def header(z: float) -> SliceHeader:
        return SliceHeader(f"{z}.dcm", "1.2", (0.0, 0.0, z), (1, 0, 0, 0, 1, 0), (0.5, 0.7), 4, 3)

    headers = [header(z) for z in (4.0, 0.0, 2.0, 6.0)]
    geometry = sort_and_check(headers, "test")
    assert [h.position[2] for h in geometry.headers] == [0.0, 2.0, 4.0, 6.0]
    assert geometry.shape == (3, 4, 4) and geometry.slice_spacing == 2.0
    np.testing.assert_allclose(np.diag(geometry.affine), [-0.7, -0.5, 2.0, 1.0])
    assert not geometry.affine.flags.writeable
    assert series_status(headers) == "ok"
    assert series_status(headers[:3] + [header(9.0)]).startswith("non-uniform slice spacing")


def test_read_image_nifti_and_dicom(tmp_path):
    affine = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    image = nib.Nifti1Image(labels, affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "mask.nii.gz")
    mask = read_image(tmp_path / "mask.nii.gz")
    assert isinstance(mask, Image) and mask.array.dtype == np.uint8
    np.testing.assert_array_equal(mask.array, labels)
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.meta["affine_source"] == "sform" and mask.meta["format"] == "nifti"
    scaled = nib.Nifti1Image(labels.astype(np.int16), affine)
    scaled.header.set_slope_inter(0.5, 1.0)
    nib.save(scaled, tmp_path / "scaled.nii")
    read = read_image(str(tmp_path / "scaled.nii"))
    assert read.array.dtype == np.float32
    np.testing.assert_allclose(read.array, labels * 0.5 + 1.0)
    written = write_series(tmp_path / "s", shape=(4, 3, 2))
    dicom = read_image(tmp_path / "s")
    assert dicom.meta["format"] == "dicom" and dicom.affine.dtype == np.float64
    np.testing.assert_array_equal(dicom.array, written.expected())
