"""A frontal chest-radiograph-like phantom: density image and lung/heart label map in millimetres.

Coordinates are patient-frame millimetres centred on the chest: ``x`` grows toward the
patient's left (image right on a PA view), ``y`` toward the feet (image down). Densities are
unitless attenuation-like values, about 0 for air and 0.55 for soft tissue; a site model in
:mod:`medimg.data.synthetic_dx` turns them into detector values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LUNG_LABEL = 1
HEART_LABEL = 2

_SOFT_TISSUE = 0.55
_LUNG = 0.16
_HEART_EXTRA = 0.1  # the heart and mediastinum are thicker than the chest wall
_SPINE_EXTRA = 0.1
_RIB_EXTRA = 0.09
_RIB_PERIOD = 24.0  # mm between posterior ribs
_HEART_TILT = 0.3  # rad: the long axis points down toward the patient's left
_HEART_HALF_HEIGHT = 52.0  # mm, semi-axis along the heart's short axis
_DOME_CURVATURE = 0.010  # 1/mm: hemidiaphragm dome y = apex + k (x - centre)^2
_EFFUSION_SLOPE = 0.5  # meniscus: the fluid line rises by this many mm per mm laterally


@dataclass(frozen=True)
class ChestAnatomy:
    """Patient-level anatomy (kept across a patient's studies).

    Attributes:
        half_width: Half the inner thoracic width in mm.
        ctr: Cardiothoracic ratio (heart width / thoracic width).
        dome_right: ``y`` of the right hemidiaphragm's apex (patient right, image left), mm.
        dome_left: ``y`` of the left hemidiaphragm's apex, mm.
        rib_phase: Offset of the rib pattern along ``y``, mm.
    """

    half_width: float
    ctr: float
    dome_right: float
    dome_left: float
    rib_phase: float


@dataclass(frozen=True)
class Findings:
    """What is abnormal in one study.

    Attributes:
        nodule: ``(x, y, radius, contrast)`` of a round opacity in a lung, or None.
        effusion: Sides with pleural fluid (-1 patient right, +1 patient left); empty if none.
        effusion_height: Height of the fluid at the chest wall above the costophrenic angle, mm.
    """

    nodule: tuple[float, float, float, float] | None = None
    effusion: tuple[int, ...] = ()
    effusion_height: float = 0.0


def _lung_shape(a: ChestAnatomy, side: int) -> tuple[float, float, float, float, float]:
    """Centre x, centre y, semi-axes and dome apex of one lung (side -1 right, +1 left)."""
    scale = a.half_width / 140.0
    dome = a.dome_left if side > 0 else a.dome_right
    return side * 0.53 * a.half_width, 0.0, 0.42 * a.half_width, 125.0 * scale, dome


def _dome(a: ChestAnatomy, side: int, x: np.ndarray) -> np.ndarray:
    """``y`` of one hemidiaphragm along ``x``."""
    xc, _, _, _, apex = _lung_shape(a, side)
    return apex + _DOME_CURVATURE * (x - xc) ** 2


def _diaphragm(a: ChestAnatomy, x: np.ndarray) -> np.ndarray:
    """``y`` of the diaphragm across the chest (each side's dome on its own side)."""
    return np.where(x < 0, _dome(a, -1, x), _dome(a, 1, x))


def _lung(a: ChestAnatomy, side: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Anatomical lung field of one side (above its hemidiaphragm, lateral to the mediastinum)."""
    xc, yc, ax, ay, _ = _lung_shape(a, side)
    inside = ((x - xc) / ax) ** 2 + ((y - yc) / ay) ** 2 <= 1.0
    return inside & (y < _dome(a, side, x)) & (side * x > 0.13 * a.half_width)


def _heart(a: ChestAnatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tilted ellipse whose horizontal width is ``ctr`` times the thoracic width."""
    half_width = a.ctr * a.half_width
    sin, cos = math.sin(_HEART_TILT), math.cos(_HEART_TILT)
    long_axis = math.sqrt(max(half_width**2 - (_HEART_HALF_HEIGHT * sin) ** 2, 1.0)) / cos
    half_height = math.sqrt((long_axis * sin) ** 2 + (_HEART_HALF_HEIGHT * cos) ** 2)
    # Shift the heart toward the patient's left as it grows (cardiomegaly enlarges leftward).
    xh = 0.1 * a.half_width + 0.35 * (half_width - 0.42 * a.half_width)
    yh = min(a.dome_left, a.dome_right) - half_height + 6.0
    u = cos * (x - xh) + sin * (y - yh)
    v = -sin * (x - xh) + cos * (y - yh)
    return (u / long_axis) ** 2 + (v / _HEART_HALF_HEIGHT) ** 2 <= 1.0


def _effusion_opacity(a: ChestAnatomy, f: Findings, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] of pleural fluid: a meniscus rising laterally, soft at its top."""
    opacity = np.zeros(np.broadcast(x, y).shape, dtype=np.float32)
    for side in f.effusion:
        xc, _, ax, _, _ = _lung_shape(a, side)
        lateral = xc + side * 0.85 * ax
        angle = float(_dome(a, side, np.asarray(lateral)))  # costophrenic angle
        line = angle - f.effusion_height + _EFFUSION_SLOPE * side * (lateral - x)
        side_opacity = np.clip((y - line) / 8.0, 0.0, 1.0) * _lung(a, side, x, y)
        opacity = np.maximum(opacity, side_opacity.astype(np.float32))
    return opacity


def aerated_lung(a: ChestAnatomy, f: Findings, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where the lungs hold air: the lung fields less the heart and any pleural fluid."""
    lungs = _lung(a, -1, x, y) | _lung(a, 1, x, y)
    return lungs & ~_heart(a, x, y) & (_effusion_opacity(a, f, x, y) < 0.5)


def draw_chest(
    a: ChestAnatomy, f: Findings, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Density image (float32) and label map (uint8: 1 lung, 2 heart) at points ``(x, y)`` mm."""
    x, y = np.broadcast_arrays(x, y)
    w = a.half_width
    body = (np.abs(x) / (w + 18.0)) ** 4 + (np.abs(y - 30.0) / 210.0) ** 4 <= 1.0
    density = np.where(body, _SOFT_TISSUE, 0.0).astype(np.float32)
    heart = _heart(a, x, y)
    lungs = _lung(a, -1, x, y) | _lung(a, 1, x, y)
    diaphragm = _diaphragm(a, x)
    central = body & ~lungs & (np.abs(x) < 0.2 * w) & (y < diaphragm)
    density[central | heart] += _HEART_EXTRA
    density[lungs & ~heart] = _LUNG
    spine = body & (np.abs(x) < 0.1 * w)
    vertebrae = 0.7 + 0.3 * np.cos(2.0 * np.pi * (y + a.rib_phase) / 26.0)
    density += (_SPINE_EXTRA * spine * vertebrae).astype(np.float32)
    thorax = (np.abs(x) < w + 4.0) & (np.abs(x) > 0.1 * w) & (y < diaphragm + 10.0)
    wave = 0.5 + 0.5 * np.cos(2.0 * np.pi * (y - 0.003 * x**2 + a.rib_phase) / _RIB_PERIOD)
    ribs = np.clip((wave - 0.55) / 0.15, 0.0, 1.0) * thorax
    density += (_RIB_EXTRA * ribs).astype(np.float32)
    opacity = _effusion_opacity(a, f, x, y)
    density += (0.95 * (_SOFT_TISSUE - _LUNG) * opacity).astype(np.float32)
    if f.nodule is not None:
        nx, ny, radius, contrast = f.nodule
        distance = np.hypot(x - nx, y - ny)
        edge = 0.5 * (1.0 - np.tanh((distance - radius) / 1.5))  # ~3 mm soft edge
        density += (contrast * edge).astype(np.float32)
    labels = np.zeros(x.shape, dtype=np.uint8)
    labels[lungs & ~heart & (opacity < 0.5)] = LUNG_LABEL
    labels[heart] = HEART_LABEL
    return density, labels


def place_nodule(
    rng: np.random.Generator, a: ChestAnatomy, f: Findings, radius: float
) -> tuple[float, float]:
    """A nodule centre whose disc (plus a 4 mm margin) lies in aerated lung, by rejection."""
    angles = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)
    ring_x, ring_y = np.cos(angles) * (radius + 4.0), np.sin(angles) * (radius + 4.0)
    for _ in range(2000):
        side = -1 if rng.random() < 0.5 else 1
        xc, yc, ax, ay, _ = _lung_shape(a, side)
        cx, cy = xc + rng.uniform(-ax, ax), yc + rng.uniform(-ay, ay)
        points_x = np.append(ring_x + cx, cx)
        points_y = np.append(ring_y + cy, cy)
        if aerated_lung(a, f, points_x, points_y).all():
            return float(cx), float(cy)
    raise RuntimeError("could not place a nodule in the lungs")  # pragma: no cover
