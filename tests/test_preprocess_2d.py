"""2D preprocessing: radiographs resampled onto a fixed in-plane grid, normalised per image."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt

from medimg.data.loading import PrepareVolumed, load_steps, mask_on_image_grid
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor, plane_axes
from medimg.data.synthetic_dx import make_synthetic_dx

F64 = torch.float64


def _affine(columns: list[list[float]], origin: list[float]) -> torch.Tensor:
    """4x4 affine from three direction*spacing columns and an origin."""
    affine = torch.eye(4, dtype=F64)
    affine[:3, :3] = torch.tensor(columns, dtype=F64).T
    affine[:3, 3] = torch.tensor(origin, dtype=F64)
    return affine


AFFINES = {
    # A radiograph as medimg reads it: columns → patient left, rows → posterior (LPS), in RAS.
    "dx": _affine([[-1.4, 0, 0], [0, -1.4, 0], [0, 0, 1.0]], [0.0, 0.0, 0.0]),
    "coronal": _affine([[1.2, 0, 0], [0, 0, -1.0], [0, 2.0, 0]], [-30.0, 15.0, 40.0]),
    "oblique": _affine(
        [[math.cos(0.3), math.sin(0.3), 0], [-math.sin(0.3), math.cos(0.3), 0], [0, 0, 1.0]],
        [5.0, -3.0, 2.0],
    ),
}


def _pre(**kwargs) -> VolumePreprocessor:
    config = {"spacing": (2.0, 2.0), "size": (12, 10), "window": None, "fill_value": 0.0}
    return VolumePreprocessor(PreprocessConfig(**{**config, **kwargs}))


def _world(shape: tuple[int, int], affine: torch.Tensor) -> torch.Tensor:
    """World coordinates (X, Y, 3) of the voxel centres of a one-slice grid."""
    i, j = torch.meshgrid(*[torch.arange(n, dtype=F64) for n in shape], indexing="ij")
    index = torch.stack([i, j, torch.zeros_like(i)], dim=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_output_voxels_sit_at_their_world_positions(name):
    affine, shape = AFFINES[name], (30, 26)
    world = _world(shape, affine)
    pre = _pre(spacing=(1.5, 1.7))
    grid = pre.grid_affine(affine, list(shape))
    for axis in range(3):
        out = pre(world[..., axis].float(), affine)
        assert out.shape == (1, 12, 10)
        # A linear ramp is reproduced exactly by bilinear interpolation inside the image.
        expected = _world((12, 10), grid)[..., axis].float()
        assert torch.allclose(out[0], expected, atol=1e-3)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_grid_is_centred_orthonormal_and_in_the_image_plane(name):
    affine, shape = AFFINES[name], [31, 21]
    grid = _pre(spacing=(3.0, 2.5), size=(9, 7)).grid_affine(affine, shape)
    centre_in = affine[:3, :3] @ torch.tensor([15.0, 10.0, 0.0], dtype=F64) + affine[:3, 3]
    centre_out = grid[:3, :3] @ torch.tensor([4.0, 3.0, 0.0], dtype=F64) + grid[:3, 3]
    assert torch.allclose(centre_in, centre_out)
    axes = grid[:3, :2] / torch.tensor([3.0, 2.5], dtype=F64)
    assert torch.allclose(axes.T @ axes, torch.eye(2, dtype=F64), atol=1e-12)
    normal = torch.linalg.cross(affine[:3, 0], affine[:3, 1])
    assert torch.allclose(axes.T @ normal, torch.zeros(2, dtype=F64), atol=1e-9)


def test_radiograph_grid_is_ras():
    axes = plane_axes(AFFINES["dx"])
    assert torch.allclose(axes, torch.eye(3, dtype=F64))


def _flip(volume: torch.Tensor, affine: torch.Tensor, axis: int):
    """The same image stored with ``axis`` reversed, and the affine that keeps it in place."""
    n = volume.shape[axis]
    flipped = affine.clone()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, axis] * (n - 1)
    flipped[:3, axis] = -affine[:3, axis]
    return volume.flip(axis), flipped


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_flipped_or_transposed_storage_gives_the_same_output(name):
    affine = AFFINES[name]
    volume = torch.rand(25, 19, generator=torch.Generator().manual_seed(1))
    pre = _pre(normalise="percentile")
    reference = pre(volume, affine)
    for axis in (0, 1):
        assert torch.allclose(pre(*_flip(volume, affine, axis)), reference, atol=1e-5)
    transposed = affine[:, [1, 0, 2, 3]]
    assert torch.allclose(pre(volume.T, transposed), reference, atol=1e-5)


def test_input_shapes_and_a_volume_is_refused():
    pre, affine = _pre(), AFFINES["dx"]
    image = torch.rand(20, 16)
    expected = pre(image, affine)
    assert torch.equal(pre(image[..., None], affine), expected)
    assert torch.equal(pre(image[None, ..., None], affine), expected)
    with pytest.raises(ValueError, match="2D image"):
        pre(torch.rand(20, 16, 3), affine)


def test_mask_is_resampled_nearest_as_integers():
    pre = _pre(spacing=(1.4, 1.4), size=(20, 16))
    labels = torch.zeros(20, 16)
    labels[3:9, 2:7], labels[12:18, 5:14] = 1, 2
    out = pre.resample_mask(labels, AFFINES["dx"])
    assert out.dtype == torch.int64 and out.shape == (1, 20, 16)
    # Same spacing and size: the RAS grid is the stored grid reversed along both axes.
    assert torch.equal(out[0], labels.flip(0, 1).long())
    coarse = _pre(spacing=(2.9, 3.3), size=(9, 8)).resample_mask(labels, AFFINES["dx"])
    assert set(coarse.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("mode", ["minmax", "percentile", "zscore"])
def test_per_image_normalisation_matches_numpy(mode):
    rng = np.random.default_rng(0)
    raw = rng.gamma(2.0, 300.0, size=(16, 14)).astype(np.float32)
    pre = _pre(spacing=(1.0, 1.0), size=(16, 14), normalise=mode, percentiles=(2.0, 97.0))
    identity = _affine([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], [0, 0, 0])
    out = pre(torch.from_numpy(raw), identity)[0].numpy()
    if mode == "zscore":
        expected = (raw - raw.mean()) / raw.std()
    else:
        low, high = np.percentile(raw, [0, 100] if mode == "minmax" else [2.0, 97.0])
        expected = np.clip((raw - low) / (high - low), 0.0, 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_per_image_normalisation_removes_gain_and_offset():
    image = torch.rand(24, 20, generator=torch.Generator().manual_seed(2)) * 1000
    pre = _pre(normalise="percentile")
    assert torch.allclose(pre(image, AFFINES["dx"]), pre(3.0 * image + 250.0, AFFINES["dx"]))


@pytest.mark.parametrize("mode", ["window", "minmax", "percentile", "zscore"])
def test_scripted_2d_module_matches_eager(mode):
    pre = _pre(normalise=mode, window=(100.0, 900.0), fill_value=0.0)
    image, affine = torch.rand(30, 22) * 1000, AFFINES["oblique"]
    scripted = torch.jit.script(pre)
    assert torch.allclose(scripted(image, affine), pre(image, affine), atol=1e-6)
    mask = (image > 500).float()
    assert torch.equal(scripted.resample_mask(mask, affine), pre.resample_mask(mask, affine))
    assert torch.allclose(scripted.grid_affine(affine, [30, 22]), pre.grid_affine(affine, [30, 22]))


def test_2d_module_exports_with_torch_export():
    """No branch on values (grid axes, per-image statistics), so torch.export can trace it."""
    pre = _pre(normalise="percentile")
    image, affine = torch.rand(30, 22, 1) * 1000, AFFINES["coronal"]
    exported = torch.export.export(pre, (image, affine)).module()
    assert torch.allclose(exported(image, affine), pre(image, affine), atol=1e-6)
    flipped = _flip(image, affine, 0)  # other values and affine, same shapes
    assert torch.allclose(exported(*flipped), pre(*flipped), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spacing": (1.0, 1.0, 1.0), "size": (4, 4)}, "spacing"),
        ({"spacing": (1.0,), "size": (4,)}, "size"),
        ({"normalise": "histogram"}, "normalise"),
        ({"percentiles": (99.0, 1.0)}, "percentiles"),
    ],
)
def test_bad_2d_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**{"spacing": (1.0, 1.0), "size": (4, 4), **kwargs})


def test_mask_on_image_grid_accepts_a_2d_mask():
    affine = AFFINES["dx"].numpy()
    mask = np.zeros((6, 5), dtype=np.uint8)
    mask[1:3, 2:4] = 2
    aligned = mask_on_image_grid(mask, affine, (6, 5, 1), affine)
    assert aligned.shape == (6, 5, 1) and np.array_equal(aligned[..., 0], mask)


@pytest.fixture(scope="module")
def dx_manifest(tmp_path_factory):
    return make_synthetic_dx(tmp_path_factory.mktemp("dx2d"), seed=5, n_internal=2, n_external=1)


def test_prepared_radiograph_record_is_2d_and_mask_lines_up(dx_manifest):
    folder = dx_manifest["external"].parent  # 300 rows x 280 columns at 1.25 mm
    record = {"image": str(next(folder.glob("images/*.dcm"))), "label": 1}
    record["mask"] = str(folder / "masks" / (record["image"].split("/")[-1][:-4] + ".nii.gz"))
    loaded = mt.Compose(load_steps(with_mask=True))(record)
    assert loaded["image"].shape == (1, 280, 300, 1) and loaded["mask"].shape == (1, 280, 300, 1)
    pre = _pre(spacing=(2.8, 2.8), size=(128, 128), normalise="percentile")
    prepared = PrepareVolumed(pre)(loaded)
    image, mask = prepared["image"], prepared["mask"]
    assert image.shape == (1, 128, 128) and mask.shape == (1, 128, 128)
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1, 2}
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert image[mask == 2].mean() - image[mask == 1].mean() > 0.15
    # The mask read on its own and resampled on its own affine lands on the same grid.
    raw = nib.load(record["mask"])
    alone = pre.resample_mask(
        torch.from_numpy(np.asarray(raw.dataobj)).float(), loaded["image"].affine
    )
    assert torch.equal(alone, mask)
