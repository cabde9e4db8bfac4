"""Anatomy of the synthetic CT phantom: organs, lesions, true HU and the organ label map.

Coordinates are LPS world millimetres of the patient (before the per-study shift); the liver
lies on the patient's right (LPS x < 0). Organ shapes are fixed; what varies per study is the
body size, a global shift, the lesion and the scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Label values of the organ map (``mask_organs``); the lesion overrides the liver.
BACKGROUND, LIVER, KIDNEY, LESION = 0, 1, 2, 3
ORGAN_LABEL_NAMES = ("background", "liver", "kidney", "lesion")

# True HU of each tissue.
AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
LIVER_HU = 60.0
# Kidneys sit below soft tissue and inside a perirenal fat capsule (as in real anatomy), so they
# stand out at 4 mm without being as bright as a lesion (a bright kidney would look like one).
KIDNEY_HU = 20.0
BONE_HU = 400.0

BODY_SEMI_AXES = (85.0, 65.0)
BODY_JITTER = 0.08
_FAT_THICKNESS = 8.0
_LIVER_CENTRE = (-35.0, -6.0, 8.0)
_LIVER_SEMI_AXES = (45.0, 37.0, 55.0)
_KIDNEY_CENTRES = ((-40.0, 28.0, -30.0), (40.0, 28.0, -30.0))
_KIDNEY_SEMI_AXES = (16.0, 13.0, 30.0)
_PERIRENAL_FAT = 5.0  # capsule thickness (mm), ~1 voxel at 4 mm
_SPINE_CENTRE = (0.0, 48.0)
_SPINE_RADIUS = 10.0

# Lesion radii span a wide range so that the volume (reg3d target) varies ~20x, far more than
# the error of reading it from a 4 mm image.
LESION_RADIUS = (10.0, 25.0)
LESION_CONTRAST = (70.0, 150.0)
_LESION_EDGE = 0.5  # sigmoid scale (mm): the 10-90 % transition is ~2 mm wide
_LESION_MARGIN = 2.0  # clearance (mm) between the lesion and the liver / body / kidney capsule


@dataclass(frozen=True)
class Lesion:
    """Ellipsoidal lesion in patient coordinates."""

    centre: np.ndarray
    semi_axes: np.ndarray
    contrast: float

    @property
    def volume_ml(self) -> float:
        """True (analytic) ellipsoid volume in millilitres."""
        return float(4.0 / 3.0 * np.pi * np.prod(self.semi_axes) / 1000.0)


def draw_lesion(rng: np.random.Generator, body_axes: np.ndarray, contrast_scale: float) -> Lesion:
    """Draw a lesion lying inside the liver, the inner body and outside the kidney capsules.

    Args:
        rng: The study's generator (consumed in a fixed order, so output is deterministic).
        body_axes: The study's body semi-axes (x, y) in mm.
        contrast_scale: The scanner's lesion contrast multiplier.

    Returns:
        The lesion, placed by rejection sampling.
    """
    radius = rng.uniform(*LESION_RADIUS)
    semi_axes = radius * rng.uniform(0.9, 1.1, 3)
    contrast = rng.uniform(*LESION_CONTRAST) * contrast_scale
    liver_c = np.array(_LIVER_CENTRE)
    liver_ax = np.array(_LIVER_SEMI_AXES)
    sphere = _unit_sphere_points(200)
    surface = sphere * (semi_axes + _LESION_MARGIN)
    capsule_ax = np.array(_KIDNEY_SEMI_AXES) + _PERIRENAL_FAT
    capsules = [np.array(c) + sphere * capsule_ax for c in _KIDNEY_CENTRES]
    inner = body_axes - _FAT_THICKNESS
    for _ in range(1000):
        # Uniform candidate in the liver bounding box shrunk by the lesion extent.
        half = np.maximum(liver_ax - semi_axes, 0.0)
        centre = liver_c + rng.uniform(-1.0, 1.0, 3) * half
        pts = centre + surface
        ok = np.all(np.sum(((pts - liver_c) / liver_ax) ** 2, axis=1) <= 1.0)
        ok &= np.all(np.sum((pts[:, :2] / inner) ** 2, axis=1) <= 1.0)
        for kidney_c, capsule in zip(_KIDNEY_CENTRES, capsules, strict=True):
            # Convex bodies apart: neither one's sampled surface enters the other.
            ok &= np.all(np.sum(((pts - kidney_c) / capsule_ax) ** 2, axis=1) > 1.0)
            lesion_ax = semi_axes + _LESION_MARGIN
            ok &= np.all(np.sum(((capsule - centre) / lesion_ax) ** 2, axis=1) > 1.0)
        if ok:
            return Lesion(centre=centre, semi_axes=semi_axes, contrast=float(contrast))
    raise RuntimeError("could not place a lesion inside the liver")  # pragma: no cover


def _unit_sphere_points(n: int) -> np.ndarray:
    """Roughly uniform points on the unit sphere (Fibonacci lattice), shape (n, 3)."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = np.pi * (1.0 + 5**0.5) * i
    return np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1
    )


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre, axes) -> np.ndarray:
    """Normalised squared radius of an axis-aligned ellipsoid (<= 1 inside)."""
    return (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    )


def phantom(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    body_axes: np.ndarray,
    lesion: Lesion | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the phantom at patient coordinates.

    Args:
        x: LPS x of every voxel (mm, patient frame); ``y``/``z`` likewise, broadcastable.
        y: LPS y.
        z: LPS z.
        body_axes: Body semi-axes (x, y) in mm.
        lesion: The lesion, or None.

    Returns:
        True HU (float32, noise-free) and the organ label map (uint8: 0 background, 1 liver,
        2 kidney, 3 lesion), same shape. The lesion label is the lesion's solid ellipsoid;
        its image edge is a ~2 mm sigmoid.
    """
    x, y, z = np.broadcast_arrays(x, y, z)
    body = (x / body_axes[0]) ** 2 + (y / body_axes[1]) ** 2 <= 1.0
    inner_axes = body_axes - _FAT_THICKNESS
    inner = (x / inner_axes[0]) ** 2 + (y / inner_axes[1]) ** 2 <= 1.0
    hu = np.full(x.shape, AIR_HU, dtype=np.float32)
    labels = np.zeros(x.shape, dtype=np.uint8)
    hu[body] = FAT_HU
    hu[inner] = SOFT_TISSUE_HU
    liver = inner & (_ellipsoid(x, y, z, _LIVER_CENTRE, _LIVER_SEMI_AXES) <= 1.0)
    hu[liver] = LIVER_HU
    labels[liver] = LIVER
    capsule_axes = np.array(_KIDNEY_SEMI_AXES) + _PERIRENAL_FAT
    for centre in _KIDNEY_CENTRES:
        # The kidney indents the liver (renal impression): capsule and kidney paint over it.
        capsule = inner & (_ellipsoid(x, y, z, centre, capsule_axes) <= 1.0)
        hu[capsule] = FAT_HU
        labels[capsule] = BACKGROUND
        kidney = inner & (_ellipsoid(x, y, z, centre, _KIDNEY_SEMI_AXES) <= 1.0)
        hu[kidney] = KIDNEY_HU
        labels[kidney] = KIDNEY
    spine = inner & ((x - _SPINE_CENTRE[0]) ** 2 + (y - _SPINE_CENTRE[1]) ** 2 <= _SPINE_RADIUS**2)
    hu[spine] = BONE_HU
    labels[spine] = BACKGROUND
    if lesion is not None:
        rho = np.sqrt(_ellipsoid(x, y, z, lesion.centre, lesion.semi_axes))
        signed_distance = (rho - 1.0) * float(np.mean(lesion.semi_axes))
        weight = 0.5 * (1.0 - np.tanh(signed_distance / (2.0 * _LESION_EDGE)))  # sigmoid(-d/w)
        hu += (lesion.contrast * weight).astype(np.float32)
        labels[signed_distance <= 0.0] = LESION
    return hu, labels
