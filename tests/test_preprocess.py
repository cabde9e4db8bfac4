"""The hand-written resampling: geometry against known affines, scripting, windowing."""

from __future__ import annotations

import pytest
import torch

from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor, invert_affine


def _world_ramp(shape, affine, axis):
    """Volume whose value at each voxel is that voxel's world coordinate along ``axis``."""
    idx = torch.stack(
        torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), -1
    )
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return world[..., axis].float()


AFFINES = {
    "identity": torch.eye(4, dtype=torch.float64),
    "flipped_lps": torch.tensor(
        [[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 2.0, -40.0], [0, 0, 0, 1]],
        dtype=torch.float64,
    ),
    "permuted": torch.tensor(
        [[0, 0, 2.0, -20.0], [1.2, 0, 0, -15.0], [0, -1.2, 0, 10.0], [0, 0, 0, 1]],
        dtype=torch.float64,
    ),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_voxels_sit_at_grid_world_positions(name, axis):
    affine = AFFINES[name]
    shape = (24, 20, 16)
    pre = VolumePreprocessor(
        PreprocessConfig(spacing=(2.0, 2.0, 2.0), size=(6, 6, 6), window=None, fill_value=0.0)
    )
    out = pre(_world_ramp(shape, affine, axis), affine)[0]
    grid = pre.grid_affine(affine, list(shape))
    expected = _world_ramp((6, 6, 6), grid, axis)
    # A linear ramp is reproduced exactly by trilinear interpolation inside the field of view.
    assert torch.allclose(out, expected, atol=1e-3)


def test_grid_is_ras_and_centred_on_input():
    affine = AFFINES["flipped_lps"]
    pre = VolumePreprocessor(PreprocessConfig(spacing=(3.0, 3.0, 3.0), size=(5, 7, 9)))
    grid = pre.grid_affine(affine, [11, 11, 11])
    assert torch.allclose(
        grid[:3, :3], torch.diag(torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64))
    )
    centre_in = affine[:3, :3] @ torch.full((3,), 5.0, dtype=torch.float64) + affine[:3, 3]
    centre_out = grid[:3, :3] @ torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64) + grid[:3, 3]
    assert torch.allclose(centre_in, centre_out)


def test_outside_field_of_view_is_fill_value_and_window_scales():
    pre = VolumePreprocessor(
        PreprocessConfig(
            spacing=(1.0, 1.0, 1.0), size=(8, 8, 8), window=(-100.0, 100.0), fill_value=-1024.0
        )
    )
    volume = torch.full((4, 4, 4), 100.0)
    out = pre(volume, torch.eye(4, dtype=torch.float64))
    assert out.min() == 0.0  # air outside the scan → bottom of the window
    assert out.max() == 1.0  # inside: 100 HU → top of the window


def test_mask_resampling_is_nearest_and_integer():
    pre = VolumePreprocessor(PreprocessConfig(spacing=(1.0, 1.0, 1.0), size=(8, 8, 8)))
    mask = torch.zeros(8, 8, 8)
    mask[2:5, 2:5, 2:5] = 1
    out = pre.resample_mask(mask, torch.eye(4, dtype=torch.float64))
    assert out.dtype == torch.int64
    assert torch.equal(out[0].float(), mask)


def test_scripted_module_matches_eager():
    pre = VolumePreprocessor(PreprocessConfig(spacing=(2.5, 2.5, 2.5), size=(10, 12, 14)))
    volume = torch.randn(20, 18, 16) * 200
    affine = AFFINES["permuted"]
    scripted = torch.jit.script(pre)
    assert torch.allclose(scripted(volume, affine), pre(volume, affine), atol=1e-6)


def test_closed_form_inverse():
    generator = torch.Generator().manual_seed(0)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :] = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    assert torch.allclose(
        invert_affine(affine) @ affine, torch.eye(4, dtype=torch.float64), atol=1e-10
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"size": (4, 0, 4)}, "size"),
        ({"window": (100.0, -100.0)}, "window"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**kwargs)
