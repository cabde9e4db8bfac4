"""Evaluate the internal test set and external sets from per-case tables: the pipeline's entry.

:func:`evaluate_sets` returns a JSON-able dict (layout in its docstring); :func:`write_set_outputs`
writes ``metrics.json``, ``curves.json``, ``report.html`` and PNG figures per set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medimg.data.errors import DataError
from medimg.evaluation import curves, stats
from medimg.evaluation.classification import choose_threshold
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.problem import (
    Problem,
    binary_columns,
    counts,
    detect_mode,
    indexed_columns,
    point_metrics,
    sample_metrics,
)
from medimg.evaluation.subgroups import intervals, subgroup_analysis

log = logging.getLogger(__name__)

CONVENTIONS = {
    "bootstrap": "patients resampled with replacement, all their cases together; seeded",
    "interval": "percentile bootstrap interval; AUROC also DeLong (Sun & Xu), cases independent",
    "difference": "other set − internal set; unpaired bootstrap when no patient is shared, "
    "paired (joint resampling of the union of patients) when some are; two-sided bootstrap p",
    "ece": "expected calibration error, equal-width bins on [0, 1], L1 (torchmetrics)",
    "calibration": "intercept a and slope b of logit P(y=1) = a + b·logit(p), unpenalised",
    "operating_point": "chosen on the validation split, held fixed on every other set",
    "segmentation_empty": "both empty: Dice/IoU/NSD 1, distances 0 (included); one empty: "
    "Dice/IoU/NSD 0, distances NaN (excluded from distance means); counted per class",
}
REQUIRED = {
    "binary": ("label", "prob"),
    "multiclass": ("label",),
    "multilabel": (),
    "regression": ("label", "pred"),
    "segmentation": ("class", "status", "dice"),
}


def check_table(table: pd.DataFrame, mode: str, name: str) -> None:
    """Raise :class:`DataError` naming the set and the missing or bad column."""
    for column in ("case_id", "patient_id", *REQUIRED[mode]):
        if column not in table:
            raise DataError(f"evaluation set {name!r}: per-case table has no {column!r} column")
    if table.empty:
        raise DataError(f"evaluation set {name!r}: per-case table is empty")
    if mode == "segmentation":
        return
    probs = indexed_columns(table, "prob") if mode != "binary" else ["prob"]
    values = table[probs if mode != "regression" else ["pred", "label"]].to_numpy(float)
    if not np.isfinite(values).all():
        raise DataError(f"evaluation set {name!r}: non-finite predictions or targets")
    if mode != "regression" and ((values < 0) | (values > 1)).any():
        raise DataError(f"evaluation set {name!r}: probabilities outside [0, 1] in {probs}")


def make_problem(
    kind: str,
    sample: pd.DataFrame,
    val_table: pd.DataFrame | None,
    cfg: EvaluationConfig,
    thresholds: Sequence[float] | None = None,
    threshold_source: str = "given",
) -> tuple[Problem, dict]:
    """The :class:`Problem` of a run and its operating point.

    Thresholds are chosen on ``val_table`` unless ``thresholds`` fixes them (one per class; e.g.
    an exported model's card, when no validation split is at hand); ``threshold_source`` then
    says where they came from.
    """
    mode = detect_mode(kind, sample)
    if mode == "segmentation":
        classes = cfg.classes or sorted(sample["class"].astype(str).unique().tolist())
        return Problem(mode, classes=list(classes)), {}
    if mode == "regression":
        return Problem(mode), {}
    n = 1 if mode == "binary" else len(indexed_columns(sample, "prob"))
    classes = list(cfg.classes) if mode != "binary" else []
    if classes and len(classes) != n:
        raise ValueError(f"evaluation.classes names {len(classes)} classes, the table has {n}")
    problem = Problem(mode, classes=classes or ([str(k) for k in range(n)] if n > 1 else []))
    problem.n_bins = cfg.ece_bins
    if thresholds is not None:
        if len(thresholds) != n:
            raise ValueError(f"{len(thresholds)} fixed thresholds for {n} classes")
        problem.thresholds = [float(t) for t in thresholds]
        return problem, {
            "method": "fixed",
            "target_sensitivity": None,
            "chosen_on": threshold_source,
            "thresholds": dict(
                zip(problem.classes or ["positive"], problem.thresholds, strict=True)
            ),
            "notes": [],
        }
    if val_table is None:
        raise ValueError("classification evaluation needs the validation table (operating point)")
    check_table(val_table, mode, "val")
    problem.thresholds = [0.5] * n  # placeholder so binary_columns can pair columns
    thresholds, notes = [], []
    for prefix, y, p in binary_columns(problem, val_table):
        try:
            thresholds.append(choose_threshold(y, p, cfg.threshold_method, cfg.target_sensitivity))
        except ValueError:
            thresholds.append(0.5)
            notes.append(f"{prefix or 'positive'} has one class in validation: threshold 0.5")
    problem.thresholds = thresholds
    op = {
        "method": cfg.threshold_method,
        "target_sensitivity": cfg.target_sensitivity if cfg.threshold_method != "youden" else None,
        "chosen_on": "val",
        "thresholds": dict(zip(problem.classes or ["positive"], thresholds, strict=True)),
        "notes": notes,
    }
    return problem, op


def _evaluate_one(problem: Problem, table: pd.DataFrame, name: str, cfg: EvaluationConfig):
    """One set's JSON block and its bootstrap samples (kept for comparisons)."""
    table = table.reset_index(drop=True)
    W = stats.patient_weights(
        table["patient_id"].tolist(), cfg.n_resamples, stats.seed_for(cfg.seed, name)
    )
    point = point_metrics(problem, table)
    samples = sample_metrics(problem, table, W)
    every = intervals(point, samples, cfg.level)
    block = {
        "counts": counts(problem, table),
        "metrics": {k: v for k, v in every.items() if "/" not in k},
        "per_class": {},
    }
    for key, value in every.items():
        if "/" in key:
            cls_name, metric = key.split("/", 1)
            block["per_class"].setdefault(cls_name, {})[metric] = value
    if problem.mode in ("binary", "multiclass", "multilabel"):
        block["curves"] = {}
        columns = binary_columns(problem, table)
        for (prefix, y, p), threshold in zip(columns, problem.thresholds, strict=True):
            target = block["metrics"] if not prefix else block["per_class"][prefix[:-1]]
            if y.sum() >= 2 and (1 - y).sum() >= 2:
                d = stats.delong_ci(y, p, cfg.level)
                target["auroc"].update(delong_ci=list(d["ci"]), delong_se=d["se"])
            block["curves"][prefix[:-1] or "positive"] = _curves(y, p, threshold, W, table, cfg)
    if problem.mode == "multiclass":
        probs = table[indexed_columns(table, "prob")].to_numpy(float)
        block["confusion_argmax"] = {
            "labels": problem.classes,
            "matrix": curves.confusion_matrix(
                table["label"].to_numpy().astype(int), probs.argmax(1), len(problem.classes)
            ),
        }
    block["subgroups"] = subgroup_analysis(problem, table, cfg, name)
    return block, samples


def _curves(y, p, threshold: float, W, table: pd.DataFrame, cfg: EvaluationConfig) -> dict:
    """Figure data of one binary problem: confusion, reliability, ROC and PR with bands."""
    out = {"threshold": threshold, "confusion": curves.confusion(y, p, threshold)}
    out["reliability"] = curves.reliability(
        y, p, cfg.ece_bins, table["patient_id"].tolist(), cfg.level, cfg.seed
    )
    if 0 < y.sum() < len(y):
        out["roc"] = curves.roc_band(y, p, W, cfg.level)
        out["pr"] = curves.pr_band(y, p, W, cfg.level)
    return out


def compare(
    problem: Problem,
    internal: tuple[str, pd.DataFrame, dict],
    other: tuple[str, pd.DataFrame, dict],
    points: Mapping[str, dict],
    cfg: EvaluationConfig,
) -> dict:
    """Other − internal per metric: unpaired when no patient is shared, paired otherwise.

    ``internal`` and ``other`` are (name, table, bootstrap samples). When both sets hold the same
    cases with the same labels (one manifest, two models or preprocessings), AUROC also gets
    DeLong's paired test.
    """
    (a_name, a_table, a_samples), (b_name, b_table, b_samples) = internal, other
    shared = set(map(str, a_table["patient_id"])) & set(map(str, b_table["patient_id"]))
    if shared:
        rng = stats.seed_for(cfg.seed, "paired", a_name, b_name)
        Wa, Wb = stats.joint_weights(
            a_table["patient_id"].tolist(), b_table["patient_id"].tolist(), cfg.n_resamples, rng
        )
        a_samples = sample_metrics(problem, a_table, Wa)
        b_samples = sample_metrics(problem, b_table, Wb)
    out = {
        "against": a_name,
        "design": "paired" if shared else "unpaired",
        "shared_patients": len(shared),
        "metrics": stats.difference(
            a_samples, b_samples, points[a_name], points[b_name], cfg.level
        ),
    }
    if problem.mode == "binary" and _same_cases(a_table, b_table):
        a = a_table.set_index("case_id").sort_index()
        b = b_table.set_index("case_id").loc[a.index]
        y = a["label"].to_numpy().astype(int)
        if y.sum() >= 2 and (1 - y).sum() >= 2:
            out["delong_paired"] = stats.delong_paired_test(
                y, a["prob"].to_numpy(float), b["prob"].to_numpy(float), cfg.level
            )
    return out


def _same_cases(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Same case ids and (binary) the same labels."""
    if set(map(str, a["case_id"])) != set(map(str, b["case_id"])) or len(a) != len(b):
        return False
    la = a.set_index(a["case_id"].map(str))["label"].sort_index()
    lb = b.set_index(b["case_id"].map(str))["label"].sort_index()
    return bool((la.to_numpy() == lb.to_numpy()).all())


def evaluate_sets(
    kind: str,
    tables: Mapping[str, pd.DataFrame],
    val_table: pd.DataFrame | None = None,
    attributes: Sequence[str] | None = None,
    config: EvaluationConfig | None = None,
    thresholds: Sequence[float] | None = None,
    threshold_source: str = "given",
) -> dict:
    """Metrics with intervals, subgroups and internal-vs-external comparisons for every set.

    Args:
        kind: task kind, ``classification``, ``segmentation`` or ``regression``.
        tables: set name → per-case table (see :mod:`medimg.evaluation.problem`); the set named
            ``config.internal`` (default ``test``) is the one the others are compared with.
        val_table: validation per-case table (classification: chooses the operating point).
        attributes: subgroup columns (overrides ``config.attributes``).
        config: evaluation settings (defaults: 1,000 resamples, seed 0, 95%, Youden).
        thresholds: fixed classification operating point (one per class) instead of one chosen
            on ``val_table``; ``threshold_source`` names where it came from.

    Returns:
        ``{"kind", "mode", "internal", "conventions", "settings", "operating_point",
        "sets": {name: {"counts", "metrics": {m: {"value", "ci", "n_resamples"[, "delong_ci",
        "delong_se"]}}, "per_class": {class: {m: ...}}, "subgroups": {attribute: {"groups":
        {value: {"n_cases", "n_patients", "n_positive", "too_small", "metrics"}},
        "largest_gap": {m: {"gap", "low_group", "high_group", "ci", "p_value"}}}},
        "curves": {...}}}, "comparisons": {name: {"against", "design", "shared_patients",
        "metrics": {m: {"difference", "ci", "p_value"}}[, "delong_paired"]}}}``.
    """
    cfg = config or EvaluationConfig()
    if attributes is not None:
        cfg = EvaluationConfig(**{**cfg.__dict__, "attributes": tuple(attributes)})
    if not tables:
        raise ValueError("evaluate_sets needs at least one per-case table")
    first = next(iter(tables.values()))
    problem, op = make_problem(kind, first, val_table, cfg, thresholds, threshold_source)
    results: dict = {
        "kind": kind,
        "mode": problem.mode,
        "internal": cfg.internal if cfg.internal in tables else None,
        "conventions": CONVENTIONS,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "operating_point": op,
        "sets": {},
        "comparisons": {},
    }
    samples, points = {}, {}
    for name, table in tables.items():
        check_table(table, problem.mode, name)
        block, samples[name] = _evaluate_one(problem, table, name, cfg)
        results["sets"][name] = block
        points[name] = {k: v["value"] for k, v in block["metrics"].items()} | {
            f"{c}/{m}": v["value"] for c, ms in block["per_class"].items() for m, v in ms.items()
        }
        log.info("%s: %s", name, _headline(problem.mode, block))
    internal = results["internal"]
    for name, table in tables.items():
        if internal is None or name == internal:
            continue
        results["comparisons"][name] = compare(
            problem,
            (internal, tables[internal].reset_index(drop=True), samples[internal]),
            (name, table.reset_index(drop=True), samples[name]),
            points,
            cfg,
        )
    return jsonable(results)


def jsonable(value):
    """Plain JSON types: numpy scalars and arrays unwrapped, NaN and ±inf as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


HEADLINE = {
    "binary": "auroc",
    "multiclass": "auroc",
    "multilabel": "auroc",
    "regression": "mae",
    "segmentation": "dice",
}


def _headline(mode: str, block: dict) -> str:
    m = block["metrics"].get(HEADLINE[mode], {"value": math.nan, "ci": [math.nan, math.nan]})
    low, high = m["ci"]
    return f"{HEADLINE[mode]} {m['value']:.3f} ({low:.3f}-{high:.3f})"
