"""Augmentation presets: a few knobs that build a MONAI Compose of random transforms."""

from __future__ import annotations

from dataclasses import dataclass

from monai import transforms as mt

from medimg.data import keys

PRESETS = ("none", "light")


@dataclass(frozen=True)
class AugmentationPreset:
    """Random augmentation applied to prepared (resampled, windowed) training images only.

    Args:
        name: ``none`` or ``light`` (flips plus small intensity noise, scale and shift).
        flip_prob: probability of a flip along each spatial axis.
        noise_std: standard deviation of additive Gaussian noise (windowed units, 0..1).
        intensity_prob: probability of each intensity transform.
    """

    name: str = "light"
    flip_prob: float = 0.5
    noise_std: float = 0.02
    intensity_prob: float = 0.3

    def __post_init__(self) -> None:
        if self.name not in PRESETS:
            raise ValueError(f"augmentation.name must be one of {PRESETS}, got {self.name!r}")

    def build(self, with_mask: bool, seed: int) -> mt.Compose | None:
        """The transform for records with ``image`` (and ``mask`` when ``with_mask``)."""
        if self.name == "none":
            return None
        spatial_keys = [keys.IMAGE, keys.MASK] if with_mask else [keys.IMAGE]
        steps = [
            mt.RandFlipd(spatial_keys, prob=self.flip_prob, spatial_axis=axis) for axis in (0, 1)
        ]
        steps += [
            mt.RandGaussianNoised(keys.IMAGE, prob=self.intensity_prob, std=self.noise_std),
            mt.RandScaleIntensityd(keys.IMAGE, factors=0.1, prob=self.intensity_prob),
            mt.RandShiftIntensityd(keys.IMAGE, offsets=0.05, prob=self.intensity_prob),
        ]
        compose = mt.Compose(steps)
        compose.set_random_state(seed=seed)
        return compose
