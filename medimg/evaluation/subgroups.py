"""Subgroup analysis (metrics per attribute value, largest gaps) and the dataset audit table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medimg.evaluation import stats
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.problem import Problem, binary_columns, point_metrics, sample_metrics

UNKNOWN = "unknown"
AUDIT_SPLITS = ("train", "val", "test")


def age_band_labels(edges: Sequence[int] = (40, 60)) -> list[str]:
    """Band names in age order: with edges (40, 60) → ``<40``, ``40-59``, ``≥60``."""
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [*labels, f"≥{edges[-1]}"]


def age_bands(age: pd.Series, edges: Sequence[int] = (40, 60)) -> pd.Series:
    """Age band per case (see :func:`age_band_labels`); a missing age → ``unknown``."""
    labels = age_band_labels(edges)
    values = pd.to_numeric(age, errors="coerce").to_numpy(float)
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    out = np.array([labels[i] for i in np.minimum(index, len(labels) - 1)], dtype=object)
    out[~np.isfinite(values)] = UNKNOWN
    return pd.Series(out, index=age.index, name="age_band")


def with_attributes(table: pd.DataFrame, attributes: Sequence[str], edges=(40, 60)) -> pd.DataFrame:
    """``table`` with ``age_band`` derived from ``age`` (when asked for) and missing values named."""
    table = table.copy()
    if "age_band" in attributes and "age_band" not in table and "age" in table:
        table["age_band"] = age_bands(table["age"], edges)
    for column in attributes:
        if column in table:
            table[column] = table[column].astype(object).where(table[column].notna(), UNKNOWN)
            table[column] = table[column].map(str)
    return table


def _groups(table: pd.DataFrame, attribute: str, edges: Sequence[int]):
    """(value, rows) per group; age bands in age order, other values sorted, ``unknown`` last."""
    groups = dict(list(table.groupby(attribute, sort=True)))
    order = age_band_labels(edges) if attribute == "age_band" else sorted(groups)
    order = [v for v in order if v in groups and v != UNKNOWN]
    order += [v for v in groups if v not in order]
    return [(v, groups[v]) for v in order]


def _positives(problem: Problem, rows: pd.DataFrame) -> int | None:
    """Fewest positives over the binary problems (None for regression/segmentation)."""
    if problem.mode in ("regression", "segmentation"):
        return None
    return int(min(y.sum() for _, y, _ in binary_columns(problem, rows)))


def subgroup_analysis(
    problem: Problem, table: pd.DataFrame, cfg: EvaluationConfig, set_name: str
) -> dict:
    """Per attribute: each group's metrics with intervals and counts, and the largest gaps.

    A group with fewer than ``cfg.min_cases`` cases or (classification) fewer than
    ``cfg.min_positives`` positives is flagged ``too_small`` ("too small to say"); gaps are taken
    between groups that are not, and say so when fewer than two remain.
    """
    table = with_attributes(table, cfg.attributes, cfg.age_bands)
    out = {}
    for attribute in cfg.attributes:
        if attribute not in table:
            out[attribute] = {"missing": True, "groups": {}, "largest_gap": {}}
            continue
        groups, samples = {}, {}
        for value, rows in _groups(table, attribute, cfg.age_bands):
            rows = rows.reset_index(drop=True)
            positives = _positives(problem, rows)
            n_cases = int(rows["case_id"].nunique())
            small = n_cases < cfg.min_cases or (
                positives is not None and positives < cfg.min_positives
            )
            rng = stats.seed_for(cfg.seed, set_name, attribute, str(value))
            W = stats.patient_weights(rows["patient_id"].tolist(), cfg.n_resamples, rng)
            point = _headline(point_metrics(problem, rows))
            samples[value] = _headline(sample_metrics(problem, rows, W))
            groups[str(value)] = {
                "n_cases": n_cases,
                "n_patients": int(rows["patient_id"].nunique()),
                "n_positive": positives,
                "too_small": bool(small),
                "metrics": intervals(point, samples[value], cfg.level),
            }
        out[attribute] = {
            "missing": False,
            "groups": groups,
            "largest_gap": largest_gaps(groups, samples, cfg.level),
        }
    return out


def _headline(metrics: Mapping) -> dict:
    """Set-level metrics only (per-class values stay in the set's own table)."""
    return {k: v for k, v in metrics.items() if "/" not in k}


def intervals(point: Mapping[str, float], samples: Mapping[str, np.ndarray], level: float) -> dict:
    """``{metric: {"value", "ci": [low, high], "n_resamples"}}`` from points and bootstrap samples."""
    out = {}
    for name, value in point.items():
        s = samples.get(name)
        ci = stats.percentile_ci(s, level) if s is not None else (math.nan, math.nan)
        valid = int(np.isfinite(s).sum()) if s is not None else 0
        out[name] = {"value": float(value), "ci": list(ci), "n_resamples": valid}
    return out


def largest_gaps(groups: dict, samples: dict, level: float) -> dict:
    """Per metric: the largest difference between two groups, which ones, its interval and p."""
    adequate = [g for g in groups if not groups[g]["too_small"]]
    pool = adequate if len(adequate) >= 2 else list(groups)
    out = {}
    if len(pool) < 2:
        return out
    keys = {str(k): k for k in samples}
    for metric in groups[pool[0]]["metrics"]:
        values = {g: groups[g]["metrics"][metric]["value"] for g in pool}
        finite = {g: v for g, v in values.items() if math.isfinite(v)}
        if len(finite) < 2:
            continue
        low = min(finite, key=finite.get)
        high = max(finite, key=finite.get)
        d = samples[keys[high]][metric] - samples[keys[low]][metric]
        out[metric] = {
            "gap": finite[high] - finite[low],
            "low_group": low,
            "high_group": high,
            "ci": list(stats.percentile_ci(d, level)),
            "p_value": stats.bootstrap_p_value(d),
            "includes_small_groups": len(adequate) < 2,
        }
    return out


def audit_table(
    split_frame: pd.DataFrame,
    external_frames: Mapping[str, pd.DataFrame],
    attributes: Sequence[str],
    age_edges: Sequence[int] = (40, 60),
) -> pd.DataFrame:
    """Cases, positives and patients per subgroup in train, val, test and each external set.

    Args:
        split_frame: the internal manifest with a ``split`` column.
        external_frames: external set name → manifest.
        attributes: subgroup columns (``age_band`` derived from ``age``).
        age_edges: age band edges.

    Returns:
        One row per (attribute, group, set) plus an ``all`` row per set, columns ``attribute``,
        ``group``, ``set``, ``cases``, ``positives`` (NaN where the label is not binary),
        ``patients``.
    """
    sets = {s: split_frame[split_frame["split"] == s] for s in AUDIT_SPLITS}
    sets.update(external_frames)
    rows = []
    for set_name, frame in sets.items():
        frame = with_attributes(frame, attributes, age_edges)
        rows.append({"attribute": "all", "group": "all", "set": set_name, **_audit(frame)})
        for attribute in attributes:
            if attribute not in frame:
                continue
            for value, group in _groups(frame, attribute, age_edges):
                rows.append(
                    {"attribute": attribute, "group": str(value), "set": set_name, **_audit(group)}
                )
    return pd.DataFrame(
        rows, columns=["attribute", "group", "set", "cases", "positives", "patients"]
    )


def _audit(frame: pd.DataFrame) -> dict:
    """Counts of one group; positives: label 1 (binary) or any finding (multi-label lists)."""
    positives = math.nan
    if "label" in frame and len(frame):
        first = frame["label"].iloc[0]
        if isinstance(first, (list, tuple, np.ndarray)):
            positives = int(
                sum(bool(np.any(np.asarray(v, dtype=float) > 0)) for v in frame["label"])
            )
        else:
            label = pd.to_numeric(frame["label"], errors="coerce")
            if label.notna().all() and set(label.unique()) <= {0, 1}:
                positives = int(label.sum())
    return {
        "cases": int(len(frame)),
        "positives": positives,
        "patients": int(frame["patient_id"].nunique()),
    }
