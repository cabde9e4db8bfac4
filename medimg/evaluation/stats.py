"""Uncertainty: patient-level bootstrap, percentile intervals, DeLong's AUROC interval and tests.

The bootstrap resamples *patients* with replacement and keeps all of a patient's cases together,
so several images of one patient do not count as independent evidence. A resample is expressed
as integer case weights (see :mod:`medimg.evaluation.weighted`), which is what makes 1,000
resamples of 1,000 cases cost well under a second.

DeLong's interval and paired test are hand-written (the fast midrank algorithm of Sun & Xu,
IEEE SPL 2014) because neither scikit-learn nor scipy has them; they treat cases as independent.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm, rankdata


def seed_for(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded from ``seed`` and names (stable across runs and Python processes)."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def patient_weights(
    patient_ids: Sequence, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Case weights (B, n) of ``n_resamples`` patient-level bootstrap resamples.

    Each resample draws as many patients as there are, with replacement; a case's weight is how
    often its patient was drawn.
    """
    codes, uniques = _codes(patient_ids)
    return patient_counts(len(uniques), n_resamples, rng)[:, codes]


def patient_counts(n_patients: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each patient is drawn in each resample, (B, n_patients) float."""
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    offsets = (np.arange(n_resamples) * n_patients)[:, None]
    flat = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_patients)
    return flat.reshape(n_resamples, n_patients).astype(float)


def joint_weights(
    patients_a: Sequence, patients_b: Sequence, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paired resamples of two sets that share patients: one draw over the union of patients."""
    codes, uniques = _codes(list(patients_a) + list(patients_b))
    counts = patient_counts(len(uniques), n_resamples, rng)
    return counts[:, codes[: len(patients_a)]], counts[:, codes[len(patients_a) :]]


def _codes(values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return codes, uniques


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples, ignoring resamples where the metric is undefined."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 2:
        return (math.nan, math.nan)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "difference = 0": twice the smaller tail beyond zero.

    It is the inverse of the percentile interval (p < 0.05 exactly when the 95% interval excludes
    0); with B resamples it cannot go below 2 / (B + 1).
    """
    d = differences[np.isfinite(differences)]
    if len(d) == 0:
        return math.nan
    below = (np.sum(d <= 0) + 1) / (len(d) + 1)
    above = (np.sum(d >= 0) + 1) / (len(d) + 1)
    return float(min(1.0, 2 * min(below, above)))


def _structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """AUROCs and DeLong's placement values V10 (positives) and V01 (negatives), per score row."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    x, z = scores[:, y], scores[:, ~y]
    m, n = x.shape[1], z.shape[1]
    tx = rankdata(x, axis=1)
    tz = rankdata(z, axis=1)
    tall = rankdata(np.concatenate([x, z], axis=1), axis=1)
    auc = (tall[:, :m].sum(1) / m - (m + 1) / 2) / n
    v10 = (tall[:, :m] - tx) / n
    v01 = 1 - (tall[:, m:] - tz) / m
    return auc, v10, v01


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of each score row and their DeLong covariance matrix (k, k)."""
    auc, v10, v01 = _structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's variance needs at least 2 positives and 2 negatives")
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def delong_ci(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> dict:
    """DeLong's AUROC, standard error and Wald interval (clipped to [0, 1])."""
    auc, cov = delong_covariance(y, p)
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = norm.ppf(1 - (1 - level) / 2)
    value = float(auc[0])
    return {"auroc": value, "se": se, "ci": (max(0.0, value - z * se), min(1.0, value + z * se))}


def delong_paired_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, level: float = 0.95):
    """DeLong's test of two correlated AUROCs on the same cases: difference b − a, CI, p-value."""
    auc, cov = delong_covariance(y, np.vstack([p_a, p_b]))
    diff = float(auc[1] - auc[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    z = norm.ppf(1 - (1 - level) / 2)
    p_value = float(2 * norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return {"difference": diff, "se": se, "ci": (diff - z * se, diff + z * se), "p_value": p_value}


def difference(
    samples_a: dict[str, np.ndarray],
    samples_b: dict[str, np.ndarray],
    point_a: dict[str, float],
    point_b: dict[str, float],
    level: float = 0.95,
) -> dict[str, dict]:
    """Difference b − a per metric with bootstrap interval and p-value.

    Paired or unpaired is decided by how the samples were drawn: independent weights for
    disjoint sets, :func:`joint_weights` for sets that share patients.
    """
    out = {}
    for name in point_a.keys() & samples_a.keys() & point_b.keys() & samples_b.keys():
        d = samples_b[name] - samples_a[name]
        out[name] = {
            "difference": _minus(point_b[name], point_a[name]),
            "ci": percentile_ci(d, level),
            "p_value": bootstrap_p_value(d),
        }
    return dict(sorted(out.items()))


def _minus(b: float, a: float) -> float:
    return float(b - a) if math.isfinite(a) and math.isfinite(b) else math.nan
