"""The model card: what an integrator needs to run, trust and report the model (no identifiers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

CARD_FORMAT = "medimg-diagnostic-model/2"
DEFAULT_INTENDED_USE = (
    "Research use only. Not a medical device; not for diagnosis or treatment decisions."
)
INPUT_VOLUME = "float32 tensor (X, Y, Z) in native units ({units}), any orientation and spacing"
INPUT_AFFINE = "float64 4x4 voxel index (i, j, k) → RAS world mm (NIfTI convention)"


def threshold_for(card: Mapping[str, Any], name: str) -> float:
    """The decision threshold for label ``name``: per-label, global, or 0.5."""
    op = card.get("operating_point") or {}
    per_label = op.get("thresholds") or {}
    if name in per_label:
        return float(per_label[name])
    return float(op.get("threshold", 0.5))


def output_contract(kind: str, num_classes: int, multilabel: bool = False) -> str:
    """What ``forward(volume, affine)`` returns, in words."""
    if kind == "segmentation":
        return (
            f"class probabilities ({num_classes}, X, Y, Z) on the input's own voxel grid "
            "(model-grid softmax resampled trilinearly, background 1 outside the model's field "
            "of view); the label map is argmax over the first axis (0 = background)"
        )
    if kind == "regression":
        return f"raw predictions ({num_classes},) in target units"
    if multilabel:
        return (
            f"independent probabilities of {num_classes} labels, shape ({num_classes},) (sigmoid)"
        )
    if num_classes == 1:
        return "probability of the positive class, shape (1,) (sigmoid)"
    return f"class probabilities ({num_classes},) (softmax)"


def observed_inputs(metas: list[Mapping[str, Any]], affines: list[np.ndarray]) -> dict:
    """Ranges of the inputs the model was validated on: modality, shapes, spacing, orientation.

    Args:
        metas: reader metadata per case (``modality``, ``orientation``, ``rescale_type``...).
        affines: the cases' voxel→RAS affines.
    """
    spacing = np.array([np.linalg.norm(np.asarray(a)[:3, :3], axis=0) for a in affines])
    summary: dict[str, Any] = {"cases": len(affines)}
    if len(spacing):
        summary["spacing_mm"] = {
            "min": [round(float(v), 4) for v in spacing.min(0)],
            "max": [round(float(v), 4) for v in spacing.max(0)],
        }
    for key in ("modality", "orientation", "rescale_type", "manufacturer"):
        values = sorted({str(m[key]) for m in metas if m.get(key) not in (None, "")})
        if values:
            summary[key] = values
    return summary


def input_contract(observed: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> dict:
    """The input the model expects, from what it was validated on and the preprocessing."""
    modality = list(observed.get("modality", []))
    units = "Hounsfield units" if "CT" in modality else "the scanner's rescaled values"
    return {
        "volume": INPUT_VOLUME.format(units=units),
        "affine": INPUT_AFFINE,
        "modality": modality or None,
        "units": units,
        "reoriented_to": "RAS (any input orientation is resampled)",
        "resampled_to_spacing_mm": list(preprocessing.get("spacing", [])),
        "grid_size": list(preprocessing.get("size", [])),
        "validated_on": dict(observed),
    }


def validation_section(metrics: Mapping[str, Any], internal: str = "test") -> dict:
    """Internal and external results as the pipeline passes them (CIs, subgroups included).

    Every set's dict is copied as it is, so whatever the evaluation reports (confidence
    intervals, calibration, subgroup tables) reaches the card unchanged.
    """
    sets = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    return {
        "internal": {k: dict(v) for k, v in sets.items() if k == internal},
        "external": {k: dict(v) for k, v in sets.items() if k not in (internal, "train", "val")},
    }


def operating_point(kind: str, threshold: float | None, given: Mapping | None = None) -> dict:
    """The decision rule results are reported with (a configured or evaluated threshold)."""
    if given:
        return dict(given)
    if kind == "segmentation":
        return {"rule": "argmax over class probabilities", "source": "fixed"}
    if kind == "regression":
        return {"rule": "none (raw prediction)", "source": "fixed"}
    if threshold is None:
        return {"threshold": 0.5, "source": "default (not calibrated on validation data)"}
    return {"threshold": float(threshold), "source": "config (export.operating_point)"}
