"""Augmentation presets: a few knobs that build a MONAI Compose of random transforms."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from monai import transforms as mt

from medimg.data import keys

PRESETS = ("none", "light", "medium", "strong")

# Knob values of each named preset (configs/augmentation/<name>.yaml hold the same values).
PRESET_SETTINGS: dict[str, dict[str, float]] = {
    "none": {"flip_prob": 0.0, "noise_std": 0.0, "intensity_prob": 0.0},
    "light": {},
    "medium": {
        "noise_std": 0.03,
        "prob_spatial": 0.3,
        "rotate_deg": 10.0,
        "scale": 0.1,
        "gamma": 0.3,
    },
    "strong": {
        "noise_std": 0.05,
        "intensity_prob": 0.5,
        "prob_spatial": 0.5,
        "rotate_deg": 20.0,
        "scale": 0.2,
        "gamma": 0.5,
        "smooth_sigma": 1.0,
        "intensity_scale": 0.2,
        "intensity_shift": 0.1,
    },
}


@dataclass(frozen=True)
class AugmentationPreset:
    """Random augmentation applied to prepared (resampled, windowed) training images only.

    Spatial transforms move ``image`` and ``mask`` together (bilinear for the image, nearest
    neighbour for the mask, so the mask keeps its labels); intensity transforms touch the image
    only. A knob at 0 leaves its transform out, so ``light`` builds exactly what it always has.

    Args:
        name: ``none``, ``light`` (flips plus small intensity noise, scale and shift),
            ``medium`` (plus rotation/zoom and gamma) or ``strong`` (larger, plus blurring).
        flip_prob: probability of a flip along each of the first two spatial axes.
        noise_std: standard deviation of additive Gaussian noise (windowed units, 0..1).
        intensity_prob: probability of each intensity transform.
        prob_spatial: probability of a random rotation and zoom (one affine resampling).
        rotate_deg: largest rotation about each axis, in degrees.
        scale: largest relative zoom: factors in ``[1 - scale, 1 + scale]``.
        gamma: contrast (gamma) range ``[1 - gamma, 1 + gamma]``.
        smooth_sigma: largest Gaussian blur sigma, in voxels.
        intensity_scale: intensities multiplied by a factor in ``[1 - s, 1 + s]``.
        intensity_shift: intensities shifted by an offset in ``[-s, s]``.
    """

    name: str = "light"
    flip_prob: float = 0.5
    noise_std: float = 0.02
    intensity_prob: float = 0.3
    prob_spatial: float = 0.0
    rotate_deg: float = 0.0
    scale: float = 0.0
    gamma: float = 0.0
    smooth_sigma: float = 0.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05

    def __post_init__(self) -> None:
        if self.name not in PRESETS:
            raise ValueError(f"augmentation.name must be one of {PRESETS}, got {self.name!r}")
        for knob in ("flip_prob", "intensity_prob", "prob_spatial"):
            if not 0.0 <= getattr(self, knob) <= 1.0:
                raise ValueError(
                    f"augmentation.{knob} must be in [0, 1], got {getattr(self, knob)}"
                )
        for knob in ("scale", "gamma", "intensity_scale"):
            if not 0.0 <= getattr(self, knob) < 1.0:
                raise ValueError(
                    f"augmentation.{knob} must be in [0, 1), got {getattr(self, knob)}"
                )
        for knob in ("noise_std", "rotate_deg", "smooth_sigma", "intensity_shift"):
            if getattr(self, knob) < 0.0:
                raise ValueError(f"augmentation.{knob} must be >= 0, got {getattr(self, knob)}")

    @classmethod
    def from_name(cls, name: str) -> AugmentationPreset:
        """The named preset with its standard knob values."""
        if name not in PRESET_SETTINGS:
            raise ValueError(f"augmentation.name must be one of {PRESETS}, got {name!r}")
        return cls(name=name, **PRESET_SETTINGS[name])

    def settings(self) -> dict[str, object]:
        """Every knob by name (what a config file holds)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def build(self, with_mask: bool, seed: int, spatial_dims: int = 3) -> mt.Compose | None:
        """The transform for records with ``image`` (and ``mask`` when ``with_mask``).

        Args:
            with_mask: records carry an integer ``mask`` that moves with the image.
            seed: seeds every random transform (same seed, same sequence of augmentations).
            spatial_dims: 2 or 3, the dimension of the prepared images (``len(preprocess.size)``).

        Returns:
            The seeded ``Compose``, or ``None`` for ``none``.
        """
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if self.name == "none":
            return None
        spatial_keys = [keys.IMAGE, keys.MASK] if with_mask else [keys.IMAGE]
        steps: list[mt.Transform] = self._spatial(spatial_keys, with_mask, spatial_dims)
        steps += [
            mt.RandFlipd(spatial_keys, prob=self.flip_prob, spatial_axis=axis) for axis in (0, 1)
        ]
        steps += self._contrast()
        steps += [
            mt.RandGaussianNoised(keys.IMAGE, prob=self.intensity_prob, std=self.noise_std),
            mt.RandScaleIntensityd(
                keys.IMAGE, factors=self.intensity_scale, prob=self.intensity_prob
            ),
            mt.RandShiftIntensityd(
                keys.IMAGE, offsets=self.intensity_shift, prob=self.intensity_prob
            ),
        ]
        compose = mt.Compose(steps)
        compose.set_random_state(seed=seed)
        return compose

    def _spatial(self, spatial_keys: list[str], with_mask: bool, dims: int) -> list[mt.Transform]:
        """Rotation and zoom in one resampling, so the image is interpolated once."""
        if self.prob_spatial == 0.0 or (self.rotate_deg == 0.0 and self.scale == 0.0):
            return []
        radians = math.radians(self.rotate_deg)
        steps: list[mt.Transform] = [
            mt.RandAffined(
                spatial_keys,
                prob=self.prob_spatial,
                # One angle in 2D; one per axis in 3D.
                rotate_range=[radians] * (1 if dims == 2 else 3),
                scale_range=[self.scale] * dims,
                mode=["bilinear", "nearest"][: len(spatial_keys)],
                padding_mode="zeros",
            )
        ]
        if with_mask:
            # Resampling returns float; the batch contract wants an integer label map.
            steps.append(mt.CastToTyped(keys.MASK, dtype=torch.int64))
        return steps

    def _contrast(self) -> list[mt.Transform]:
        """Blur and gamma, when their knobs are set."""
        steps: list[mt.Transform] = []
        if self.smooth_sigma > 0.0:
            sigma = (self.smooth_sigma / 4, self.smooth_sigma)
            steps.append(
                mt.RandGaussianSmoothd(
                    keys.IMAGE,
                    sigma_x=sigma,
                    sigma_y=sigma,
                    sigma_z=sigma,
                    prob=self.intensity_prob,
                )
            )
        if self.gamma > 0.0:
            steps.append(
                mt.RandAdjustContrastd(
                    keys.IMAGE, prob=self.intensity_prob, gamma=(1 - self.gamma, 1 + self.gamma)
                )
            )
        return steps
