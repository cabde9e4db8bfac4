"""Metrics under case weights, vectorised over many weight rows (one row per bootstrap resample).

A patient bootstrap resample is the same data with integer case weights (how often each case's
patient was drawn), so a whole bootstrap is one weight matrix ``W`` of shape (B, n). Every function
here returns one value per row of ``W``. Hand-written because scikit-learn computes one weighted
metric per call: 1,000 resamples × 13 metrics would be 13,000 calls (minutes), while these
reductions over ``W`` take well under a second. Each function equals scikit-learn's with
``sample_weight`` (tests check this to 1e-6).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of ``p`` clipped away from 0 and 1 (so a saturated model has finite logits)."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0 (metric undefined for that resample)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def ranking(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted AUROC and average precision (scikit-learn's step-wise definition), ties included.

    Cases are sorted once; ties form groups, and per-group positive and negative weights give
    the Mann-Whitney sum (ties count 1/2) and the precision at each distinct threshold.
    """
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_p) != 0])
    Ws = W[:, order]
    ys = y[order].astype(bool)
    pos = np.add.reduceat(np.where(ys, Ws, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(ys, 0.0, Ws), starts, axis=1)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    below = np.cumsum(neg, axis=1) - neg
    auroc = ratio((pos * (below + 0.5 * neg)).sum(1), n_pos * n_neg)
    # Average precision: walk thresholds from the highest score down.
    pos_d, neg_d = pos[:, ::-1], neg[:, ::-1]
    tp, fp = np.cumsum(pos_d, axis=1), np.cumsum(neg_d, axis=1)
    precision = ratio(tp, tp + fp)
    auprc = ratio(np.nansum(pos_d * np.nan_to_num(precision), axis=1), n_pos)
    return {"auroc": auroc, "auprc": auprc}


def confusion(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, sensitivity, specificity, PPV, NPV and F1 at fixed predictions."""
    y, pred = y.astype(bool), pred.astype(bool)
    cells = np.stack([y & pred, y & ~pred, ~y & pred, ~y & ~pred], axis=1).astype(float)
    tp, fn, fp, tn = (W @ cells).T  # one matrix product for the four cells of every row
    sens, spec = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def ece_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per case: ``n_bins`` equal-width bins on [0, 1), left-closed, p = 1 on its own.

    The same rule as torchmetrics' ``binary_calibration_error`` (``bucketize(right=True) - 1``).
    """
    # torch.linspace's edges differ from numpy's in the last bit (0.6, 0.7): use the same ones.
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64).numpy()
    return np.searchsorted(edges, p, side="right") - 1


def calibration(
    y: np.ndarray, p: np.ndarray, W: np.ndarray, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Brier score, expected calibration error and logistic calibration slope and intercept."""
    y = y.astype(float)
    total = W.sum(1)
    out = {"brier": ratio(W @ (p - y) ** 2, total)}
    onehot = np.eye(n_bins + 1)[ece_bins(p, n_bins)]  # (n, bins): weighted sums by one matmul
    gap = np.abs(W @ (onehot * y[:, None]) - W @ (onehot * p[:, None])).sum(1)
    out["ece"] = ratio(gap, total)
    out["calibration_intercept"], out["calibration_slope"] = recalibration(y, p, W)
    return out


def recalibration(
    y: np.ndarray, p: np.ndarray, W: np.ndarray, max_iter: int = 50, tol: float = 1e-7
) -> tuple[np.ndarray, np.ndarray]:
    """Intercept and slope of ``logit P(y=1) = a + b·logit(p)`` by Newton steps on all rows at once.

    Unpenalised maximum likelihood, as ``LogisticRegression(C=inf)`` fits it. Every row starts
    from the unit-weight fit (close to each resample's, so a few steps suffice) and only rows not
    yet converged are updated. Rows that do not converge (separation, one class) are NaN.
    """
    x = logit(p)
    y = y.astype(float)
    separated = _separated(x, y.astype(bool), W)
    start = _newton(x, y, np.ones((1, len(x))), np.zeros(1), np.ones(1), max_iter, tol)
    a0, b0 = (start[0][0], start[1][0]) if np.isfinite(start[0][0]) else (0.0, 1.0)
    a, b = _newton(x, y, W, np.full(len(W), a0), np.full(len(W), b0), max_iter, tol)
    return np.where(separated, np.nan, a), np.where(separated, np.nan, b)


def _separated(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Rows whose drawn cases are (quasi-)separated by ``x``: no finite maximum likelihood."""
    drawn = W > 0
    top_negative = np.where(drawn & ~y, x, -np.inf).max(1)
    low_positive = np.where(drawn & y, x, np.inf).min(1)
    return top_negative <= low_positive


def _newton(x, y, W, a, b, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Newton iterations of the two-parameter logistic fit for each row of ``W``.

    Written with preallocated buffers and matrix products (gradient and Hessian sums of all rows
    in two BLAS calls): this loop dominates a bootstrap's cost.
    """
    a, b = a.astype(float).copy(), b.astype(float).copy()
    done = np.zeros(len(W), dtype=bool)
    failed = np.zeros(len(W), dtype=bool)
    wy = W @ np.stack([y, y * x], axis=1)  # (B, 2): the y-part of the gradient never changes
    basis = np.stack([np.ones_like(x), x, x * x], axis=1)
    buf, q = np.empty(W.shape), np.empty(W.shape)
    for _ in range(max_iter):
        rows = np.flatnonzero(~done & ~failed)
        if len(rows) == 0:
            break
        Wr = W[rows] if len(rows) < len(W) else W
        mu, qr = buf[: len(rows)], q[: len(rows)]
        np.multiply(b[rows, None], x, out=mu)
        mu += a[rows, None]
        expit(mu, out=mu)
        np.multiply(Wr, mu, out=qr)
        g = wy[rows] - qr @ basis[:, :2]
        np.subtract(1.0, mu, out=mu)
        qr *= mu
        h = qr @ basis  # (rows, 3): sums of v, v·x, v·x²
        det = h[:, 0] * h[:, 2] - h[:, 1] ** 2
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            da = (h[:, 2] * g[:, 0] - h[:, 1] * g[:, 1]) / det
            db = (h[:, 0] * g[:, 1] - h[:, 1] * g[:, 0]) / det
        # A singular Hessian or runaway coefficients mean separation: no finite maximum.
        bad = ~(det > 0) | ~np.isfinite(da) | ~np.isfinite(db) | (np.abs(b[rows] + db) > 1e4)
        failed[rows[bad]] = True
        ok = rows[~bad]
        a[ok] += da[~bad]
        b[ok] += db[~bad]
        step = np.maximum(np.abs(da[~bad]), np.abs(db[~bad]))
        done[ok] = step < tol * (1 + np.abs(a[ok]) + np.abs(b[ok]))
    return np.where(done, a, np.nan), np.where(done, b, np.nan)


def regression(y: np.ndarray, pred: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, RMSE, R² and Pearson r under case weights."""
    y, pred = y.astype(float), pred.astype(float)
    total = W.sum(1)
    err = pred - y
    mean_y = ratio(W @ y, total)
    mean_p = ratio(W @ pred, total)
    ss_res = W @ err**2
    # Centred sums via E[y²] − E[y]² would lose precision; centre per row instead.
    dy = y[None, :] - mean_y[:, None]
    dp = pred[None, :] - mean_p[:, None]
    ss_tot = (W * dy**2).sum(1)
    cov = (W * dy * dp).sum(1)
    var_p = (W * dp**2).sum(1)
    return {
        "mae": ratio(W @ np.abs(err), total),
        "rmse": np.sqrt(ratio(ss_res, total)),
        "r2": 1 - ratio(ss_res, ss_tot),
        "pearson_r": ratio(cov, np.sqrt(ss_tot * var_p)),
    }


def mean(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted mean of per-case values, ignoring NaN (cases where a metric is undefined)."""
    ok = np.isfinite(values)
    return ratio(W[:, ok] @ values[ok], W[:, ok].sum(1))
