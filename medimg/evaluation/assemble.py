"""From a model's outputs on several sets to the evaluation's files: the stages' shared step.

Plain Python (no Hydra): the training stage and ``scripts/evaluate.py`` both hand
:func:`evaluate_predictions` each set's ``predict_step`` outputs and manifest rows, and get back
the results, the written files and one flat dict of headline numbers per set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.outputs import write_set_outputs
from medimg.evaluation.predict import attach_manifest, summarise, write_table
from medimg.evaluation.segmentation import case_arrays, case_table, rank_cases
from medimg.evaluation.sets import HEADLINE, evaluate_sets
from medimg.evaluation.subgroups import audit_table
from medimg.files import write_json

log = logging.getLogger(__name__)
RESULTS_NAME = "results.json"


@dataclass
class EvalSet:
    """One set to evaluate.

    Attributes:
        outputs: ``predict_step`` outputs, one dict per batch (see :func:`summarise`).
        manifest: the set's manifest rows: ``case_id``, ``patient_id``, attribute columns.
        spacing: segmentation: voxel size (mm) of the grid the outputs are on.
        image: segmentation: case id → image array on that grid (overlay figure).
        cases: segmentation: a ready per-case table (e.g. one spacing per case) used instead
            of computing one from ``outputs`` and ``spacing``.
    """

    outputs: list[dict]
    manifest: pd.DataFrame
    spacing: Sequence[float] | None = None
    image: Callable[[str], Any] | None = None
    cases: pd.DataFrame | None = None


@dataclass
class Evaluation:
    """What :func:`evaluate_predictions` produced.

    Attributes:
        results: :func:`medimg.evaluation.sets.evaluate_sets`'s JSON-able results.
        written: set → file name → path (as :func:`write_set_outputs` returns, plus
            ``predictions`` and, for segmentation, ``cases``).
        headline: set → flat dict of numbers (the historical per-set metrics plus the
            headline metric's interval), for run-level ``metrics.json`` and trackers.
        folder: the folder holding every set's folder and ``results.json``.
        predictions: set → per-case predictions table (as in ``predictions.csv``).
    """

    results: dict
    written: dict[str, dict[str, Path]]
    headline: dict[str, dict] = field(default_factory=dict)
    folder: Path | None = None
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)


def set_tables(
    kind: str, name: str, item: EvalSet, config: EvaluationConfig
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(predictions table, flat metrics, per-case table with patients and attributes) of a set."""
    predictions, flat = summarise(kind, item.outputs)
    table = predictions
    if kind == "segmentation":
        table = item.cases
        if table is None:
            if item.spacing is None:
                raise ValueError(f"evaluation set {name!r}: segmentation needs the grid spacing")
            table = case_table(item.outputs, item.spacing, config.classes, config.nsd_tolerance_mm)
    return predictions, flat, attach_manifest(table, item.manifest, config.attributes, name)


def headline(flat: Mapping, results: Mapping, name: str) -> dict:
    """Set ``name``'s flat numbers with the headline metric's bootstrap interval added.

    Segmentation keeps its historical ``dice`` (cases with foreground only) without an
    interval: the evaluation's Dice also counts correctly empty cases, a different number.
    """
    out, mode = dict(flat), results["mode"]
    key = HEADLINE[mode]
    metric = results["sets"][name]["metrics"].get(key)
    if mode != "segmentation" and metric is not None:
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = metric["ci"]
    if mode == "binary":
        out["operating_threshold"] = results["operating_point"]["thresholds"]["positive"]
    return out


def overlay_cases(item: EvalSet, table: pd.DataFrame, metric: str = "dice") -> list[dict]:
    """Best, median and worst case (by mean ``metric`` over classes) for the overlay figure."""
    if item.image is None:
        return []
    ranked = rank_cases(table, metric)
    arrays = case_arrays(item.outputs, list(ranked.values()))
    means = table.groupby(table["case_id"].astype(str))[metric].mean()
    return [
        {
            "title": f"{rank} ({metric} {means[case_id]:.3f})",
            "case_id": case_id,
            "image": item.image(case_id),
            "reference": arrays[case_id][0],
            "prediction": arrays[case_id][1],
        }
        for rank, case_id in ranked.items()
        if case_id in arrays
    ]


def evaluate_predictions(
    kind: str,
    sets: Mapping[str, EvalSet],
    out_dir: str | Path,
    config: EvaluationConfig,
    val: EvalSet | None = None,
    split_frame: pd.DataFrame | None = None,
    thresholds: Sequence[float] | None = None,
    threshold_source: str = "given",
    subdir: str = "eval",
) -> Evaluation:
    """Evaluate every set and write ``<out_dir>/<subdir>/<set>/`` and ``results.json``.

    Each set folder holds ``predictions.csv`` (per case, no patient ids), ``metrics.json``,
    ``curves.json``, ``report.html`` and the PNG figures; segmentation adds ``cases.csv``
    (per case and class).

    Args:
        kind: task kind (``classification``, ``segmentation``, ``regression``).
        sets: set name → :class:`EvalSet`; the set named ``config.internal`` is the internal
            one, every other is compared with it.
        out_dir: the run folder (or another output root).
        config: evaluation settings; ``config.classes`` names classes/labels (segmentation:
            the foreground classes).
        val: the validation split (classification: chooses the operating point).
        split_frame: the internal manifest with its ``split`` column (dataset audit table).
        thresholds: a fixed operating point instead of one chosen on ``val``.
        threshold_source: where ``thresholds`` came from (shown in the report).
        subdir: folder under ``out_dir`` for the set folders.
    """
    predictions, flats, tables = {}, {}, {}
    for name, item in sets.items():
        predictions[name], flats[name], tables[name] = set_tables(kind, name, item, config)
    val_table = set_tables(kind, "val", val, config)[2] if val is not None else None
    results = evaluate_sets(
        kind,
        tables,
        val_table,
        config=config,
        thresholds=thresholds,
        threshold_source=threshold_source,
    )
    audit = None
    if split_frame is not None:
        externals = {n: s.manifest for n, s in sets.items() if n != config.internal}
        audit = audit_table(split_frame, externals, config.attributes, config.age_bands)
    segmentation = kind == "segmentation"
    overlays = (
        {name: overlay_cases(item, tables[name]) for name, item in sets.items()}
        if segmentation
        else None
    )
    written = write_set_outputs(
        out_dir,
        results,
        audit,
        case_tables=tables if segmentation else None,
        overlays=overlays,
        subdir=subdir,
    )
    folder = Path(out_dir, subdir)
    for name, paths in written.items():
        paths["predictions"] = write_table(predictions[name], paths["folder"] / "predictions.csv")
        if segmentation:
            cases = tables[name].drop(columns=["patient_id"], errors="ignore")
            paths["cases"] = write_table(cases, paths["folder"] / "cases.csv")
    write_json(folder / RESULTS_NAME, results)
    heads = {n: headline(flats[n], results, n) for n in sets}
    for name, numbers in heads.items():
        log.info("%s: %s", name, {k: _rounded(v) for k, v in numbers.items()})
    return Evaluation(
        results=results, written=written, headline=heads, folder=folder, predictions=predictions
    )


def card_operating_point(results: Mapping) -> dict | None:
    """The model card's ``operating_point`` from an evaluation (classification), else None.

    Binary: ``threshold`` is the one deployment applies; otherwise one threshold per class.
    """
    op = results.get("operating_point") or {}
    if not op.get("thresholds"):
        return None
    thresholds = {k: float(v) for k, v in op["thresholds"].items()}
    method = op["method"] + (
        f", target sensitivity {op['target_sensitivity']}" if op.get("target_sensitivity") else ""
    )
    out = {"source": f"chosen on {op['chosen_on']} ({method})", "thresholds": thresholds}
    if list(thresholds) == ["positive"]:
        out["threshold"] = thresholds["positive"]
    return out


def _rounded(value):
    return round(value, 4) if isinstance(value, float) and math.isfinite(value) else value
