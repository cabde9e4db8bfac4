"""Curve data for figures (JSON-able lists): ROC and PR with bootstrap bands, reliability, confusion."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm
from sklearn.metrics import precision_recall_curve, roc_curve

from medimg.evaluation import stats
from medimg.evaluation.weighted import ece_bins, ratio

GRID = np.linspace(0.0, 1.0, 101)


def _cumulative(y: np.ndarray, p: np.ndarray, W: np.ndarray):
    """Weighted true- and false-positive counts at each distinct threshold, highest first."""
    order = np.argsort(-p, kind="mergesort")
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_p) != 0])
    Ws, ys = W[:, order], y[order].astype(bool)
    tp = np.cumsum(np.add.reduceat(np.where(ys, Ws, 0.0), starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(np.where(ys, 0.0, Ws), starts, axis=1), axis=1)
    return tp, fp


def roc_band(y: np.ndarray, p: np.ndarray, W: np.ndarray, level: float = 0.95) -> dict:
    """ROC curve (scikit-learn) and a pointwise bootstrap band of TPR on a fixed FPR grid."""
    fpr, tpr, _ = roc_curve(y, p)
    tp, fp = _cumulative(y, p, W)
    tpr_b = ratio(tp, tp[:, -1:])
    fpr_b = ratio(fp, fp[:, -1:])
    rows = [
        np.interp(GRID, np.r_[0.0, f], np.r_[0.0, t])
        for f, t in zip(fpr_b, tpr_b, strict=True)
        if np.isfinite(f).all() and np.isfinite(t).all()
    ]
    low, high = _band(np.array(rows), level)
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "grid": GRID.tolist(),
        "low": low,
        "high": high,
    }


def pr_band(y: np.ndarray, p: np.ndarray, W: np.ndarray, level: float = 0.95) -> dict:
    """Precision-recall curve (scikit-learn) and a bootstrap band of precision on a recall grid.

    The band uses the precision at the first threshold reaching each recall (step-wise, as
    average precision counts it).
    """
    precision, recall, _ = precision_recall_curve(y, p)
    tp, fp = _cumulative(y, p, W)
    rows = []
    for t, f in zip(tp, fp, strict=True):
        if t[-1] <= 0:
            continue
        rec, prec = t / t[-1], ratio(t, t + f)
        index = np.minimum(np.searchsorted(rec, GRID, side="left"), len(rec) - 1)
        rows.append(prec[index])
    low, high = _band(np.array(rows), level)
    return {
        "recall": recall.tolist(),
        "precision": precision.tolist(),
        "grid": GRID.tolist(),
        "low": low,
        "high": high,
        "prevalence": float(np.mean(y)),
    }


def _band(rows: np.ndarray, level: float) -> tuple[list, list]:
    if len(rows) < 2:
        return [float("nan")] * len(GRID), [float("nan")] * len(GRID)
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(rows, [tail, 100 - tail], axis=0)
    return low.tolist(), high.tolist()


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10, patients=None, level=0.95, seed=0):
    """Per non-empty ECE bin: mean predicted probability, observed frequency (with a patient
    bootstrap interval when ``patients`` is given) and count."""
    bins = ece_bins(p, n_bins)
    onehot = np.eye(n_bins + 1)[bins]
    count = onehot.sum(0)
    keep = count > 0
    out = {
        "mean_predicted": (onehot.T @ p)[keep] / count[keep],
        "observed": (onehot.T @ y)[keep] / count[keep],
        "count": count[keep],
    }
    if patients is not None:
        W = stats.patient_weights(patients, 500, np.random.default_rng(seed))
        observed = ratio(W @ (onehot * y[:, None]), W @ onehot)[:, keep]
        low, high = np.nanpercentile(observed, [50 * (1 - level), 100 - 50 * (1 - level)], axis=0)
        out.update(low=low, high=high)
    return {k: np.asarray(v, dtype=float).tolist() for k, v in out.items()}


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> list[list[int]]:
    """2×2 confusion matrix at the operating point: rows true 0/1, columns predicted 0/1."""
    return skm.confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).tolist()


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[list[int]]:
    """K×K confusion matrix of class indices: rows reference, columns predicted."""
    return skm.confusion_matrix(y, predicted, labels=list(range(n_classes))).tolist()
