"""Point estimates of classification and regression metrics (scikit-learn, torchmetrics, scipy).

Binary metrics are computed at an operating point (threshold) chosen on the validation split
with :func:`choose_threshold` and then held fixed on every other set. Multi-class and multi-label
outputs are evaluated one-vs-rest: each class/label is a binary problem with its own threshold,
and macro values are the plain mean over classes.

Calibration: Brier score; expected calibration error over 10 equal-width bins on [0, 1] (the
torchmetrics definition, L1); calibration intercept and slope from the unpenalised logistic fit
``logit P(y=1) = a + b·logit(p)`` (ideal: a = 0, b = 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
)

from medimg.evaluation.weighted import logit

BINARY_METRICS = (
    "auroc",
    "auprc",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "brier",
    "ece",
    "calibration_intercept",
    "calibration_slope",
)
REGRESSION_METRICS = ("mae", "rmse", "r2", "pearson_r")
THRESHOLD_METHODS = ("youden", "sensitivity")


def choose_threshold(
    y: np.ndarray, p: np.ndarray, method: str = "youden", target: float = 0.9
) -> float:
    """Operating point on validation data: predictions are positive where ``p >= threshold``.

    Args:
        y: 0/1 reference per case.
        p: predicted probability of the positive class.
        method: ``youden`` (maximise sensitivity + specificity − 1) or ``sensitivity`` (the
            highest threshold whose sensitivity is at least ``target``, i.e. the best
            specificity that still reaches the target).
        target: target sensitivity for ``method="sensitivity"``.

    Raises:
        ValueError: unknown method, target outside (0, 1], or ``y`` without both classes.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if len(np.unique(y)) != 2:
        raise ValueError("choosing a threshold needs both classes in the validation labels")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    index = int(np.argmax(tpr - fpr)) if method == "youden" else int(np.argmax(tpr >= target))
    threshold = float(thresholds[index])
    # roc_curve's first threshold is +inf ("nothing positive"); keep it finite for JSON.
    return threshold if math.isfinite(threshold) else float(np.nextafter(p.max(), np.inf))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int = 10) -> dict:
    """All binary metrics of :data:`BINARY_METRICS` (NaN where undefined, e.g. one class only)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    nan = math.nan
    out = {
        "auroc": float(roc_auc_score(y, p)) if both else nan,
        "auprc": float(average_precision_score(y, p)) if y.any() else nan,
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else nan,
        "sensitivity": _score(recall_score, y, pred, 1) if y.any() else nan,
        "specificity": _score(recall_score, y, pred, 0) if (y == 0).any() else nan,
        "ppv": _score(precision_score, y, pred, 1),
        "npv": _score(precision_score, y, pred, 0),
        "f1": _score(f1_score, y, pred, 1),
    }
    out.update(calibration_metrics(y, p, n_bins))
    return out


def _score(metric, y: np.ndarray, pred: np.ndarray, pos_label: int) -> float:
    """A scikit-learn precision/recall/F1 for one class, NaN when its denominator is 0."""
    return float(metric(y, pred, pos_label=pos_label, zero_division=np.nan))


def calibration_metrics(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict:
    """Brier score, ECE (``n_bins`` equal-width bins) and calibration intercept and slope."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    # Imported here: torchmetrics' functional package takes seconds to import on its own.
    from torchmetrics.functional.classification import binary_calibration_error

    ece = binary_calibration_error(
        torch.tensor(p, dtype=torch.float64), torch.tensor(y), n_bins=n_bins, norm="l1"
    )
    intercept, slope = math.nan, math.nan
    x = logit(p)
    if len(np.unique(y)) == 2 and x[y == 0].max() > x[y == 1].min():  # else separated: no MLE
        fit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)
        fit.fit(x[:, None], y)
        intercept, slope = float(fit.intercept_[0]), float(fit.coef_[0, 0])
    return {
        "brier": float(brier_score_loss(y, p)),
        "ece": float(ece),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
    }


def one_vs_rest(y: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, K) 0/1 indicator of a class-index vector."""
    return (np.asarray(y).astype(int)[:, None] == np.arange(n_classes)[None, :]).astype(int)


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, thresholds: list[float]) -> dict:
    """Per-class one-vs-rest binary metrics, their macro mean, and argmax accuracy.

    Args:
        y: class index per case.
        probs: (n, K) softmax probabilities.
        thresholds: one operating point per class (chosen on validation one-vs-rest).
    """
    probs = np.asarray(probs, dtype=float)
    per_class = multilabel_metrics(one_vs_rest(y, probs.shape[1]), probs, thresholds)
    argmax = probs.argmax(1)
    per_class["overall"] = {
        "accuracy": float(accuracy_score(y, argmax)),
        "balanced_accuracy": float(balanced_accuracy_score(y, argmax)),
        "auroc_ovr_macro": float(
            roc_auc_score(
                y, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])
            )
        )
        if len(np.unique(y)) == probs.shape[1]
        else math.nan,
    }
    return per_class


def multilabel_metrics(Y: np.ndarray, probs: np.ndarray, thresholds: list[float]) -> dict:
    """Per-label binary metrics (``per_class``: list in label order) and their macro mean."""
    Y, probs = np.asarray(Y).astype(int), np.asarray(probs, dtype=float)
    per = [binary_metrics(Y[:, k], probs[:, k], thresholds[k]) for k in range(Y.shape[1])]
    macro = {
        m: float(np.nanmean([c[m] for c in per])) if _any_finite(per, m) else math.nan
        for m in BINARY_METRICS
    }
    return {"per_class": per, "macro": macro}


def _any_finite(rows: list[dict], metric: str) -> bool:
    return any(math.isfinite(r[metric]) for r in rows)


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """MAE, RMSE, R² (scikit-learn) and Pearson r (scipy)."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    varied = len(y) > 1 and np.ptp(y) > 0 and np.ptp(pred) > 0
    return {
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(root_mean_squared_error(y, pred)),
        "r2": float(r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else math.nan,
        "pearson_r": float(pearsonr(y, pred).statistic) if varied else math.nan,
    }
