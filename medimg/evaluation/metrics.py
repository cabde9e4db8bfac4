"""Set-level metrics from per-case outputs: scikit-learn for classification, MONAI for Dice."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_dice
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """AUROC, AUPRC and threshold metrics of a binary classifier.

    Args:
        labels: 0/1 reference per case.
        probs: predicted probability of the positive class per case.
        threshold: operating point for accuracy, sensitivity and specificity.

    Returns:
        Metric name → value (``nan`` where a metric is undefined, e.g. AUROC with one class).
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    pred = (probs >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    positives, negatives = labels == 1, labels == 0
    return {
        "auroc": float(roc_auc_score(labels, probs)) if both else math.nan,
        "auprc": float(average_precision_score(labels, probs)) if both else math.nan,
        "accuracy": float(accuracy_score(labels, pred)),
        "sensitivity": float(pred[positives].mean()) if positives.any() else math.nan,
        "specificity": float(1 - pred[negatives].mean()) if negatives.any() else math.nan,
        "threshold": threshold,
        "n": int(len(labels)),
        "n_positive": int(positives.sum()),
    }


def segmentation_case_metrics(
    prob: torch.Tensor | None, mask: torch.Tensor, labels: torch.Tensor | None = None
) -> dict:
    """Dice (MONAI) and voxel counts for one case; ``prob`` (C, ...) and ``mask`` (1, ...).

    ``labels`` (a post-processed label map, (1, ...) or (...)) replaces ``prob``'s argmax;
    without ``prob`` the classes are those present in either map (absent ones have no Dice).
    """
    reference = torch.as_tensor(mask)[0].long()
    predicted = (
        torch.as_tensor(labels).long().reshape(reference.shape)
        if labels is not None
        else prob.argmax(0)
    )
    if prob is not None:
        num_classes = prob.shape[0]
    else:
        num_classes = max(2, int(max(predicted.max(), reference.max())) + 1)
    pred = torch.nn.functional.one_hot(predicted, num_classes).movedim(-1, 0)[None]
    ref = torch.nn.functional.one_hot(reference, num_classes).movedim(-1, 0)[None]
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=True)[0]
    return {
        "dice": float(dice.nanmean()) if not torch.isnan(dice).all() else math.nan,
        "reference_voxels": int(ref[0, 1:].sum()),
        "predicted_voxels": int(pred[0, 1:].sum()),
    }


def segmentation_metrics(rows: list[dict]) -> dict:
    """Mean Dice over cases with foreground, and how often empty cases get a false detection.

    Cases whose reference is empty have no Dice; they are counted in ``n_empty`` and a
    prediction with any foreground there counts in ``empty_false_positive_rate``.
    """
    with_fg = [r for r in rows if r["reference_voxels"] > 0]
    empty = [r for r in rows if r["reference_voxels"] == 0]
    dices = np.array([r["dice"] for r in with_fg], dtype=float)
    return {
        "dice": float(np.nanmean(dices)) if len(dices) else math.nan,
        "dice_median": float(np.nanmedian(dices)) if len(dices) else math.nan,
        "n": len(rows),
        "n_with_foreground": len(with_fg),
        "n_empty": len(empty),
        "empty_false_positive_rate": (
            float(np.mean([r["predicted_voxels"] > 0 for r in empty])) if empty else math.nan
        ),
    }
