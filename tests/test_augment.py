"""Augmentation presets: shapes kept, masks keep their labels and move with the image."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra import compose, initialize_config_dir
from monai import transforms as mt

from medimg.data import keys
from medimg.data.augment import PRESETS, AugmentationPreset
from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.resolvers import register_resolvers
from medimg.pipeline.schema import register_schemas

SHAPES = {2: (32, 28), 3: (24, 20, 16)}


def _record(dims: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A smooth random image and a mask with labels 0, 1, 2 (two boxes)."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[dims]
    mask = torch.zeros(1, *shape, dtype=torch.int64)
    mask[(0, *(slice(2, n // 2) for n in shape))] = 1
    mask[(0, *(slice(n // 2 + 1, n - 3) for n in shape))] = 2
    return {keys.IMAGE: torch.rand(1, *shape, generator=g), keys.MASK: mask}


def _run(transform: mt.Compose, record: dict, times: int = 4) -> list[dict]:
    """Several draws of the transform on fresh copies of one record."""
    return [transform({k: v.clone() for k, v in record.items()}) for _ in range(times)]


def _legacy_light(with_mask: bool, seed: int) -> mt.Compose:
    """The light preset as it was built before medium/strong existed (the regression reference)."""
    spatial_keys = [keys.IMAGE, keys.MASK] if with_mask else [keys.IMAGE]
    steps = [mt.RandFlipd(spatial_keys, prob=0.5, spatial_axis=axis) for axis in (0, 1)]
    steps += [
        mt.RandGaussianNoised(keys.IMAGE, prob=0.3, std=0.02),
        mt.RandScaleIntensityd(keys.IMAGE, factors=0.1, prob=0.3),
        mt.RandShiftIntensityd(keys.IMAGE, offsets=0.05, prob=0.3),
    ]
    compose = mt.Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


def _strong_spatial(name: str) -> AugmentationPreset:
    """The preset with its rotation/zoom applied every time."""
    return dataclasses.replace(AugmentationPreset.from_name(name), prob_spatial=1.0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("with_mask", [True, False])
def test_light_is_unchanged_for_the_same_seed(dims, with_mask):
    record = _record(dims)
    if not with_mask:
        del record[keys.MASK]
    ours = _run(AugmentationPreset().build(with_mask, seed=5, spatial_dims=dims), record, 8)
    reference = _run(_legacy_light(with_mask, seed=5), record, 8)
    for a, b in zip(ours, reference, strict=True):
        for key in record:
            torch.testing.assert_close(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["light", "medium", "strong"])
def test_presets_keep_shapes_and_mask_labels(name, dims):
    record = _record(dims)
    preset = _strong_spatial(name) if name != "light" else AugmentationPreset.from_name(name)
    for out in _run(preset.build(True, seed=1, spatial_dims=dims), record):
        assert out[keys.IMAGE].shape == record[keys.IMAGE].shape
        assert out[keys.MASK].shape == record[keys.MASK].shape
        assert out[keys.MASK].dtype == torch.int64
        assert set(torch.unique(out[keys.MASK]).tolist()) <= {0, 1, 2}
        assert torch.isfinite(torch.as_tensor(out[keys.IMAGE])).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_transforms_move_the_mask_with_the_image(dims):
    # With intensity changes off, an image drawn from the mask must still match the mask.
    preset = dataclasses.replace(_strong_spatial("strong"), intensity_prob=0.0)
    record = _record(dims)
    record[keys.IMAGE] = record[keys.MASK].float()
    agree, total, moved = 0, 0, 0
    for out in _run(preset.build(True, seed=2, spatial_dims=dims), record):
        image, mask = torch.as_tensor(out[keys.IMAGE]), torch.as_tensor(out[keys.MASK])
        # Foreground voxels away from label edges, where bilinear and nearest must agree.
        sure = ((mask > 0) | (image > 0.5)) & ((image - image.round()).abs() < 0.05)
        agree += int((image.round().long()[sure] == mask[sure]).sum())
        total += int(sure.sum())
        moved += int(not torch.equal(mask, record[keys.MASK]))
    # Joint draws agree on ~98% here; image and mask moved independently agree on ~50%.
    assert agree / total > 0.95
    assert moved > 0  # the transform did move things


@pytest.mark.parametrize("name", ["light", "medium", "strong"])
def test_same_seed_same_augmentation_other_seed_other(name):
    record = _record(3)
    preset = AugmentationPreset.from_name(name)
    first = _run(preset.build(True, seed=9), record)
    again = _run(preset.build(True, seed=9), record)
    other = _run(preset.build(True, seed=10), record)
    images = [
        torch.stack([torch.as_tensor(o[keys.IMAGE]) for o in run]) for run in (first, again, other)
    ]
    torch.testing.assert_close(images[0], images[1])
    assert not torch.allclose(images[0], images[2])


def test_none_builds_nothing():
    assert AugmentationPreset.from_name("none").build(True, seed=0) is None
    assert AugmentationPreset(name="none").build(False, seed=0, spatial_dims=2) is None


@pytest.mark.parametrize("name", PRESETS)
def test_config_files_hold_the_presets_values(name):
    register_schemas()
    register_resolvers()
    overrides = [f"augmentation={name}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/x"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert AugmentationPreset(**cfg.augmentation) == AugmentationPreset.from_name(name)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"name": "heavy"}, "augmentation.name must be one of"),
        ({"prob_spatial": 1.5}, r"augmentation.prob_spatial must be in \[0, 1\]"),
        ({"gamma": 1.0}, r"augmentation.gamma must be in \[0, 1\)"),
        ({"rotate_deg": -5.0}, "augmentation.rotate_deg must be >= 0"),
    ],
)
def test_bad_knobs_are_refused_with_the_config_key(knobs, message):
    with pytest.raises(ValueError, match=message):
        AugmentationPreset(**knobs)
