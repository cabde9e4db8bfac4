"""Opt-in repair of gantry-tilted DICOM stacks: kept exactly as a sheared affine, no resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medimg.data.geometry import GeometryError
from medimg.data.image import read_image
from medimg.data.loading import load_transform
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from tests.dicom_factory import LPS_TO_RAS, directions, ds_string, write_series

SHAPE = (24, 20, 16)  # columns, rows, slices
SPACING = (1.0, 1.0, 2.0)  # row spacing, column spacing, step along the normal
ORIGIN = (-10.5, 20.25, 30.0)
RADIUS = 4.0
SPHERE_AT = (11.3, 9.6, 7.4)  # fractional voxel index of the sphere centre, tilted geometry


def _tilted_lps(orientation: str, tilt: float) -> np.ndarray:
    """The true voxel-to-LPS affine of the factory's tilted stack (third column sheared)."""
    row_dir, col_dir = directions(orientation)
    normal = np.cross(row_dir, col_dir)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * SPACING[1]
    lps[:3, 1] = col_dir * SPACING[0]
    lps[:3, 2] = SPACING[2] * (normal + np.tan(np.radians(tilt)) * col_dir)
    lps[:3, 3] = ORIGIN
    return lps


def _write_sphere(folder: Path, orientation: str, tilt: float, **faults) -> np.ndarray:
    """A tilted series holding a bright sphere; returns the sphere centre in RAS mm."""
    lps = _tilted_lps(orientation, tilt)
    centre = lps @ np.array([*SPHERE_AT, 1.0])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    world = index @ lps[:3, :3].T + lps[:3, 3]
    inside = np.linalg.norm(world - centre[:3], axis=-1) <= RADIUS
    values = np.where(inside, 1100, 24).astype(np.int64)
    write_series(
        folder,
        shape=SHAPE,
        spacing=SPACING,
        orientation=orientation,
        values=values,
        origin=ORIGIN,
        tilt_degrees=tilt,
        **faults,
    )
    return (LPS_TO_RAS @ centre)[:3]


def _centroid(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World centroid of the bright voxels (above -500 HU)."""
    voxel = np.argwhere(array > -500).mean(axis=0)
    return affine[:3, :3] @ voxel + affine[:3, 3]


@pytest.mark.parametrize(
    ("orientation", "tilt", "descending"),
    [("axial", 15.0, False), ("axial", -20.0, True), ("oblique", 12.0, False)],
)
def test_tilted_stack_is_kept_as_a_sheared_affine(tmp_path, orientation, tilt, descending):
    folder = tmp_path / "tilted"
    centre = _write_sphere(folder, orientation, tilt, descending=descending)
    with pytest.raises(GeometryError, match="tilted stacks are refused"):
        read_image(folder)
    image = read_image(folder, repair_tilt=True)
    np.testing.assert_allclose(image.affine, LPS_TO_RAS @ _tilted_lps(orientation, tilt), atol=1e-6)
    repair = f"gantry tilt {abs(tilt):.2f}° kept as a sheared affine"
    assert image.meta["geometry_repair"] == repair
    assert image.meta["slice_spacing"] == pytest.approx(SPACING[2])
    assert np.linalg.norm(_centroid(image.array, image.affine) - centre) < 0.5 * min(SPACING)
    # Read as if orthogonal, the sphere would be several millimetres off.
    orthogonal = image.affine.copy()
    orthogonal[:3, 2] = np.cross(orthogonal[:3, 0], orthogonal[:3, 1]) * SPACING[2]
    orthogonal[:3, 2] *= np.sign(orthogonal[:3, 2] @ image.affine[:3, 2])
    assert np.linalg.norm(_centroid(image.array, orthogonal) - centre) > 2.0


def test_preprocessor_puts_the_tilted_sphere_in_place(tmp_path):
    """VolumePreprocessor inverts the sheared affine and resamples onto its RAS grid."""
    centre = _write_sphere(tmp_path / "tilted", "axial", 15.0)
    image = read_image(tmp_path / "tilted", repair_tilt=True)
    pre = VolumePreprocessor(
        PreprocessConfig(spacing=(1.0, 1.0, 1.0), size=(40, 40, 48), window=None)
    )
    affine = torch.from_numpy(image.affine)
    out = pre(torch.from_numpy(image.array), affine)[0].numpy()
    grid = pre.grid_affine(affine, list(image.array.shape)).numpy()
    assert np.linalg.norm(_centroid(out, grid) - centre) < 0.5


def test_repair_tilt_reaches_monai_loading(tmp_path):
    """The refusal is final: MONAI must not retry the series with its own pydicom reader."""
    _write_sphere(tmp_path / "tilted", "axial", 15.0)
    record = {"image": str(tmp_path / "tilted")}
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the reader's error
        load_transform(with_mask=False)(record)
    assert isinstance(info.value.__cause__, GeometryError)
    assert "tilted stacks are refused" in str(info.value.__cause__)
    loaded = load_transform(with_mask=False, repair_tilt=True)(record)["image"]
    expected = LPS_TO_RAS @ _tilted_lps("axial", 15.0)
    np.testing.assert_allclose(loaded.affine.numpy(), expected, atol=1e-6)
    assert loaded.meta["geometry_repair"] == "gantry tilt 15.00° kept as a sheared affine"


def test_tilt_with_a_missing_slice_is_still_refused(tmp_path):
    _write_sphere(tmp_path / "gap", "axial", 15.0, drop=(5,))
    with pytest.raises(GeometryError, match=r"missing slices: 1 slice\(s\) missing"):
        read_image(tmp_path / "gap", repair_tilt=True)


def test_tilt_that_changes_between_slices_is_still_refused(tmp_path):
    folder = tmp_path / "bent"
    _write_sphere(folder, "axial", 15.0)
    path = folder / "0009.dcm"
    ds = pydicom.dcmread(path)
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ds_string(v) for v in (position[0], position[1] + 1.0, position[2])]
    ds.save_as(path)
    with pytest.raises(GeometryError, match="not on one straight line") as info:
        read_image(folder, repair_tilt=True)
    assert "0009.dcm (instance 10) is 1.000 mm in-plane" in str(info.value)


def test_untilted_stack_is_unchanged_by_repair_tilt(tmp_path):
    written = write_series(tmp_path / "straight", shape=(6, 5, 4))
    image = read_image(tmp_path / "straight", repair_tilt=True)
    np.testing.assert_allclose(image.affine, written.affine, atol=1e-9)
    assert "geometry_repair" not in image.meta
