"""Per-case, per-class segmentation metrics from MONAI, in millimetres, with explicit empty cases.

Conventions for a foreground class that is empty in the reference and/or the prediction
(``status`` column; counted in every report):

- ``both_empty``: Dice 1, IoU 1, surface Dice 1, HD95 0 mm, ASD 0 mm, volume errors 0 (relative
  error NaN) — the model correctly found nothing. These cases *are* included in the means.
- ``reference_empty`` (false detection) / ``prediction_empty`` (missed structure): Dice 0,
  IoU 0, surface Dice 0; HD95 and ASD are undefined (NaN) and left out of the distance means.
- ``ok``: both present; every value comes from MONAI.

HD95 is MONAI's symmetric 95th-percentile Hausdorff distance; ASD the symmetric average surface
distance; surface Dice the normalised surface Dice at a tolerance in mm; all use voxel spacing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

CASE_METRICS = (
    "dice",
    "iou",
    "hd95_mm",
    "asd_mm",
    "nsd",
    "volume_reference_ml",
    "volume_predicted_ml",
    "volume_error_ml",
    "abs_volume_error_ml",
    "rel_volume_error",
)
STATUSES = ("ok", "both_empty", "reference_empty", "prediction_empty")


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(1, C, *spatial) float one-hot of a label map."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 0)[None].double()


def _label_map(array, n_dims: int) -> torch.Tensor:
    """A label map (spatial) from a (spatial) or (1, spatial) array/tensor."""
    tensor = torch.as_tensor(np.asarray(array) if not torch.is_tensor(array) else array)
    if tensor.ndim == n_dims + 1 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != n_dims:
        raise ValueError(
            f"label map must have {n_dims} spatial dims, got shape {tuple(tensor.shape)}"
        )
    return tensor.long()


def case_metrics(
    prediction,
    reference,
    spacing: Sequence[float],
    classes: Sequence[str],
    tolerance_mm: float | Sequence[float] = 2.0,
) -> list[dict]:
    """One row per foreground class with the metrics of :data:`CASE_METRICS` and a ``status``.

    Args:
        prediction: predicted label map, (spatial) or (1, spatial); use ``argmax`` of
            probabilities first (see :func:`labels_from_probs`).
        reference: reference label map of the same shape (0 = background).
        spacing: voxel size in mm per spatial axis.
        classes: foreground class names for labels 1, 2, …
        tolerance_mm: surface-Dice tolerance, one for all classes or one per class.
    """
    n_dims = len(spacing)
    pred, ref = _label_map(prediction, n_dims), _label_map(reference, n_dims)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != reference {tuple(ref.shape)}")
    tolerances = [float(tolerance_mm)] * len(classes) if np.isscalar(tolerance_mm) else tolerance_mm
    if len(tolerances) != len(classes):
        raise ValueError(f"{len(tolerances)} surface-Dice tolerances for {len(classes)} classes")
    n = len(classes) + 1
    p1, r1 = _one_hot(pred.clamp(0, n - 1), n), _one_hot(ref.clamp(0, n - 1), n)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI warns (and returns NaN/inf) for empty classes; the conventions above handle them.
        warnings.simplefilter("ignore")
        dice = compute_dice(p1, r1, include_background=False, ignore_empty=False)[0]
        iou = compute_iou(p1, r1, include_background=False, ignore_empty=False)[0]
        hd95 = compute_hausdorff_distance(p1, r1, percentile=95, spacing=spacing)[0]
        asd = compute_average_surface_distance(p1, r1, symmetric=True, spacing=spacing)[0]
        nsd = compute_surface_dice(p1, r1, class_thresholds=list(tolerances), spacing=spacing)[0]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for k, name in enumerate(classes):
        v_pred = float(p1[0, k + 1].sum()) * voxel_ml
        v_ref = float(r1[0, k + 1].sum()) * voxel_ml
        status = _status(v_pred > 0, v_ref > 0)
        row = {
            "class": str(name),
            "status": status,
            "dice": float(dice[k]),
            "iou": float(iou[k]),
            "hd95_mm": float(hd95[k]),
            "asd_mm": float(asd[k]),
            "nsd": float(nsd[k]),
            "volume_reference_ml": v_ref,
            "volume_predicted_ml": v_pred,
            "volume_error_ml": v_pred - v_ref,
            "abs_volume_error_ml": abs(v_pred - v_ref),
            "rel_volume_error": (v_pred - v_ref) / v_ref if v_ref > 0 else math.nan,
        }
        if status == "both_empty":
            row.update(dice=1.0, iou=1.0, nsd=1.0, hd95_mm=0.0, asd_mm=0.0)
        elif status != "ok":
            row.update(dice=0.0, iou=0.0, nsd=0.0, hd95_mm=math.nan, asd_mm=math.nan)
        rows.append(row)
    return rows


def _status(predicted: bool, present: bool) -> str:
    if predicted and present:
        return "ok"
    if not predicted and not present:
        return "both_empty"
    return "prediction_empty" if present else "reference_empty"


def labels_from_probs(prob) -> torch.Tensor:
    """Label map (spatial) from class probabilities (C, spatial)."""
    return torch.as_tensor(prob).argmax(0)


def rank_cases(table, metric: str = "dice") -> dict[str, str]:
    """Case ids of the best, median and worst case by the mean of ``metric`` over classes."""
    per_case = table.groupby("case_id")[metric].mean().dropna().sort_values(kind="mergesort")
    if per_case.empty:
        return {}
    return {
        "best": str(per_case.index[-1]),
        "median": str(per_case.index[(len(per_case) - 1) // 2]),
        "worst": str(per_case.index[0]),
    }


def _prediction(batch: dict, index: int):
    """The predicted label map of one case: post-processed ``pred_mask`` if given, else argmax."""
    if "pred_mask" in batch:
        return batch["pred_mask"][index]
    return labels_from_probs(batch["prob"][index])


def case_table(
    outputs: Sequence[dict],
    spacing: Sequence[float],
    classes: Sequence[str],
    tolerance_mm: float | Sequence[float] = 2.0,
) -> pd.DataFrame:
    """Long per-case table (one row per case and foreground class) from ``predict_step`` outputs.

    Args:
        outputs: dicts with ``case_id``, ``prob`` (C, spatial) per case (or ``pred_mask``) and
            ``mask`` (1, spatial).
        spacing: the prediction grid's voxel size in mm.
        classes: foreground class names.
        tolerance_mm: surface-Dice tolerance.
    """
    rows = []
    for batch in outputs:
        for index, case_id in enumerate(batch["case_id"]):
            metrics = case_metrics(
                _prediction(batch, index), batch["mask"][index], spacing, classes, tolerance_mm
            )
            rows += [{"case_id": case_id, **row} for row in metrics]
    return pd.DataFrame(rows)


def case_arrays(outputs: Sequence[dict], case_ids: Sequence[str]) -> dict[str, tuple]:
    """(reference, prediction) label maps of the given cases, e.g. for overlay figures."""
    wanted, found = set(case_ids), {}
    for batch in outputs:
        for index, case_id in enumerate(batch["case_id"]):
            if case_id in wanted:
                reference = np.asarray(torch.as_tensor(batch["mask"][index]).cpu())
                found[case_id] = (reference, np.asarray(_prediction(batch, index).cpu()))
    return found
