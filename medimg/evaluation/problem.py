"""What is evaluated: the kind of output a per-case table holds, and its metrics as flat names.

Per-case tables (one row per case; segmentation: one row per case and class):

- binary: ``label`` (0/1), ``prob``
- multi-class: ``label`` (class index), ``prob_0`` … ``prob_{K-1}``
- multi-label: ``label_0`` … ``label_{K-1}`` (0/1), ``prob_0`` … ``prob_{K-1}``
- regression: ``label`` (target), ``pred``
- segmentation: ``class`` and the columns of :data:`medimg.evaluation.segmentation.CASE_METRICS`

plus ``case_id``, ``patient_id`` and attribute columns. Metric names are flat: ``auroc`` is the
binary value or the macro mean over classes, ``<class>/auroc`` a per-class value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medimg.evaluation import classification as cls
from medimg.evaluation import weighted
from medimg.evaluation.segmentation import CASE_METRICS as SEG_METRICS

MODES = ("binary", "multiclass", "multilabel", "regression", "segmentation")


@dataclass
class Problem:
    """How to read a per-case table: its mode, class names and operating points.

    Attributes:
        mode: one of :data:`MODES`.
        classes: class/label names (multi-class, multi-label, segmentation foreground).
        thresholds: operating point per class (binary: one), chosen on validation.
        n_bins: equal-width bins of the expected calibration error.
    """

    mode: str
    classes: list[str] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    n_bins: int = 10


def indexed_columns(table: pd.DataFrame, prefix: str) -> list[str]:
    """``prefix_0``, ``prefix_1``, … present in ``table``, in index order."""
    found = [c for c in table.columns if re.fullmatch(rf"{prefix}_\d+", str(c))]
    return sorted(found, key=lambda c: int(c.rsplit("_", 1)[1]))


def detect_mode(kind: str, table: pd.DataFrame) -> str:
    """The mode of a per-case table of task ``kind`` (see the module docstring)."""
    if kind in ("regression", "segmentation"):
        return kind
    if kind != "classification":
        raise ValueError(f"task kind must be classification, segmentation or regression: {kind!r}")
    if "prob" in table:
        return "binary"
    if indexed_columns(table, "label"):
        return "multilabel"
    if indexed_columns(table, "prob"):
        return "multiclass"
    raise ValueError("classification table needs a 'prob' column or 'prob_<k>' columns")


def binary_columns(
    problem: Problem, table: pd.DataFrame
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(prefix, y, p) per binary problem: one for binary, one per class otherwise."""
    if problem.mode == "binary":
        return [("", table["label"].to_numpy().astype(int), table["prob"].to_numpy(float))]
    probs = table[indexed_columns(table, "prob")].to_numpy(float)
    if problem.mode == "multiclass":
        labels = cls.one_vs_rest(table["label"].to_numpy(), probs.shape[1])
    else:
        labels = table[indexed_columns(table, "label")].to_numpy().astype(int)
    names = problem.classes or [str(k) for k in range(probs.shape[1])]
    return [(f"{names[k]}/", labels[:, k], probs[:, k]) for k in range(probs.shape[1])]


def point_metrics(problem: Problem, table: pd.DataFrame) -> dict[str, float]:
    """Point estimates (scikit-learn, torchmetrics, MONAI per case) under flat names."""
    if problem.mode == "regression":
        return cls.regression_metrics(table["label"].to_numpy(), table["pred"].to_numpy())
    if problem.mode == "segmentation":
        return _macro(
            {
                f"{c}/{m}": _nanmean(rows[m].to_numpy(float))
                for c, rows in _by_class(problem, table)
                for m in SEG_METRICS
            },
            problem.classes,
            SEG_METRICS,
        )
    out = {}
    for (prefix, y, p), t in zip(binary_columns(problem, table), problem.thresholds, strict=True):
        out.update({prefix + k: v for k, v in cls.binary_metrics(y, p, t, problem.n_bins).items()})
    if problem.mode == "binary":
        return out
    out = _macro(out, _names(problem, table), cls.BINARY_METRICS)
    if problem.mode == "multiclass":
        y = table["label"].to_numpy().astype(int)
        probs = table[indexed_columns(table, "prob")].to_numpy(float)
        overall = cls.multiclass_metrics(y, probs, problem.thresholds)["overall"]
        out["argmax_accuracy"] = overall["accuracy"]
        out["argmax_balanced_accuracy"] = overall["balanced_accuracy"]
    return out


def sample_metrics(problem: Problem, table: pd.DataFrame, W: np.ndarray) -> dict[str, np.ndarray]:
    """The same metrics as :func:`point_metrics`, one value per row of case weights ``W``."""
    if problem.mode == "regression":
        return weighted.regression(table["label"].to_numpy(), table["pred"].to_numpy(), W)
    if problem.mode == "segmentation":
        out = {}
        for c, rows in _by_class(problem, table):
            positions = table.index.get_indexer(rows.index)
            for m in SEG_METRICS:
                out[f"{c}/{m}"] = weighted.mean(rows[m].to_numpy(float), W[:, positions])
        return _macro(out, problem.classes, SEG_METRICS)
    out = {}
    for (prefix, y, p), t in zip(binary_columns(problem, table), problem.thresholds, strict=True):
        metrics = {
            **weighted.ranking(y, p, W),
            **weighted.confusion(y, p >= t, W),
            **weighted.calibration(y, p, W, problem.n_bins),
        }
        out.update({prefix + k: v for k, v in metrics.items()})
    if problem.mode == "binary":
        return out
    out = _macro(out, _names(problem, table), cls.BINARY_METRICS)
    if problem.mode == "multiclass":
        y = table["label"].to_numpy().astype(int)
        correct = table[indexed_columns(table, "prob")].to_numpy(float).argmax(1) == y
        total = W.sum(1)
        out["argmax_accuracy"] = weighted.ratio(W @ correct.astype(float), total)
        recalls = [
            weighted.ratio(W @ (correct & (y == k)).astype(float), W @ (y == k).astype(float))
            for k in range(len(problem.thresholds))
        ]
        out["argmax_balanced_accuracy"] = np.nanmean(np.vstack(recalls), axis=0)
    return out


def _names(problem: Problem, table: pd.DataFrame) -> list[str]:
    return problem.classes or [str(k) for k in range(len(indexed_columns(table, "prob")))]


def _by_class(problem: Problem, table: pd.DataFrame):
    """(class name, rows) of a long segmentation table in the order of ``problem.classes``."""
    table = table.reset_index(drop=True) if not table.index.is_unique else table
    return [(c, table[table["class"].astype(str) == c]) for c in problem.classes]


def _macro(values: dict, classes: list[str], metrics) -> dict:
    """Add the macro mean over classes (NaN-ignoring) of each per-class metric."""
    out = {}
    for m in metrics:
        stack = [values[f"{c}/{m}"] for c in classes if f"{c}/{m}" in values]
        if not stack:
            continue
        if isinstance(stack[0], np.ndarray):
            arr = np.vstack(stack)
            finite = np.isfinite(arr)
            n = finite.sum(0)
            out[m] = np.where(n > 0, np.where(finite, arr, 0).sum(0) / np.maximum(n, 1), np.nan)
        else:
            out[m] = _nanmean(np.asarray(stack, dtype=float))
    return {**out, **values}


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def counts(problem: Problem, table: pd.DataFrame) -> dict:
    """Cases, patients and (binary-type modes) positives per class."""
    n_cases = table["case_id"].nunique()
    out = {"n_cases": int(n_cases), "n_patients": int(table["patient_id"].nunique())}
    if problem.mode in ("binary", "multiclass", "multilabel"):
        for prefix, y, _ in binary_columns(problem, table):
            out[f"{prefix}n_positive"] = int(y.sum())
    if problem.mode == "segmentation":
        for c, rows in _by_class(problem, table):
            for status in ("both_empty", "reference_empty", "prediction_empty"):
                out[f"{c}/n_{status}"] = int((rows["status"] == status).sum())
    return out
