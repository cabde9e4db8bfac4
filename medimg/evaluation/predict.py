"""Turning model outputs into per-case prediction tables and set metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.evaluation.classification import (
    multiclass_metrics,
    multilabel_metrics,
    regression_metrics,
)
from medimg.evaluation.metrics import (
    classification_metrics,
    segmentation_case_metrics,
    segmentation_metrics,
)
from medimg.files import write_atomic


def _values(tensor) -> np.ndarray:
    return np.asarray(torch.as_tensor(tensor).detach().cpu().reshape(-1), dtype=float)


def _classification_row(batch: dict, index: int) -> dict:
    """``prob`` (binary) or ``prob_<k>``; ``label`` (class index) or ``label_<k>`` (multi-label)."""
    probs = _values(batch["prob"][index])
    row = (
        {"prob": float(probs[0])}
        if len(probs) == 1
        else {f"prob_{k}": float(v) for k, v in enumerate(probs)}
    )
    if keys.LABEL in batch:
        label = _values(batch[keys.LABEL][index])
        row.update(
            {keys.LABEL: int(label[0])}
            if len(label) == 1
            else {f"label_{k}": int(v) for k, v in enumerate(label)}
        )
    return row


def _segmentation_row(batch: dict, index: int) -> dict:
    """Dice and voxel counts of one case: its ``pred_mask`` (post-processed) if given, else argmax."""
    labels = batch["pred_mask"][index] if "pred_mask" in batch else None
    prob = batch["prob"][index] if "prob" in batch else None
    return segmentation_case_metrics(prob, batch[keys.MASK][index], labels)


def _classification_summary(table: pd.DataFrame) -> dict:
    """Binary: the historical keys; multi-class / multi-label: macro values at 0.5 (argmax)."""
    if "prob" in table:
        if keys.LABEL not in table:
            return {"n": len(table)}
        return classification_metrics(table[keys.LABEL].to_numpy(), table["prob"].to_numpy())
    probs = table[[c for c in table if c.startswith("prob_")]].to_numpy()
    labels = [c for c in table if c.startswith("label_")]
    if labels:
        m = multilabel_metrics(table[labels].to_numpy(), probs, [0.5] * probs.shape[1])["macro"]
    elif keys.LABEL in table:
        both = multiclass_metrics(table[keys.LABEL].to_numpy(), probs, [0.5] * probs.shape[1])
        m = {**both["macro"], "accuracy": both["overall"]["accuracy"]}
    else:
        return {"n": len(table)}
    return {"auroc": m["auroc"], "auprc": m["auprc"], "accuracy": m["accuracy"], "n": len(table)}


def summarise(kind: str, outputs: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Per-case table and set metrics from ``predict_step`` outputs (one dict per batch).

    Table columns follow :mod:`medimg.evaluation.problem`: binary ``prob``/``label``,
    multi-class ``prob_<k>``/``label``, multi-label ``prob_<k>``/``label_<k>``, regression
    ``pred``/``label``; segmentation keeps ``dice``/``reference_voxels``/``predicted_voxels``
    (per-class MONAI metrics in mm: :func:`medimg.evaluation.segmentation.case_table`).

    Args:
        kind: ``classification``, ``segmentation`` or ``regression``.
        outputs: dicts with ``case_id``, ``prob`` (or ``pred``) and ``label`` or ``mask``;
            segmentation may give ``pred_mask`` (a post-processed label map) beside or instead
            of ``prob``.
    """
    rows: list[dict] = []
    for batch in outputs:
        for index, case_id in enumerate(batch[keys.CASE_ID]):
            if kind == "regression":
                row = {keys.CASE_ID: case_id, "pred": float(_values(batch["pred"][index])[0])}
                if keys.LABEL in batch:
                    row[keys.LABEL] = float(_values(batch[keys.LABEL][index])[0])
                rows.append(row)
                continue
            if kind == "classification":
                row = {keys.CASE_ID: case_id, **_classification_row(batch, index)}
            else:
                row = {keys.CASE_ID: case_id}
                if keys.MASK in batch:
                    row.update(_segmentation_row(batch, index))
            rows.append(row)
    table = pd.DataFrame(rows)
    if kind == "classification":
        metrics = _classification_summary(table)
    elif kind == "regression":
        metrics = (
            {**regression_metrics(table[keys.LABEL], table["pred"]), "n": len(table)}
            if keys.LABEL in table
            else {"n": len(table)}
        )
    else:
        metrics = segmentation_metrics(rows) if "dice" in table else {"n": len(table)}
    return table, metrics


def stack_probs(outputs: list[dict]) -> torch.Tensor:
    """All cases' probabilities in prediction order, stacked on the first dimension."""
    return torch.cat(
        [
            batch["prob"].reshape(len(batch[keys.CASE_ID]), *batch["prob"].shape[1:])
            for batch in outputs
        ]
    )


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a per-case table as CSV, atomically."""
    return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def attach_manifest(
    table: pd.DataFrame, manifest: pd.DataFrame, attributes: Sequence[str], name: str
) -> pd.DataFrame:
    """Add ``patient_id`` and subgroup attribute columns (and ``age``) from the manifest.

    Args:
        table: per-case predictions with ``case_id``.
        manifest: the set's manifest (one row per case).
        attributes: subgroup columns wanted; absent ones are skipped (reported as missing).
        name: the set's name, for error messages.

    Raises:
        DataError: a predicted case is not in the manifest, or the manifest has no patient_id.
    """
    if keys.PATIENT_ID not in manifest:
        raise DataError(f"evaluation set {name!r}: manifest has no {keys.PATIENT_ID!r} column")
    wanted = [keys.PATIENT_ID, *(c for c in (*attributes, "age") if c in manifest)]
    wanted = [c for c in dict.fromkeys(wanted) if c not in table]
    info = manifest.assign(**{keys.CASE_ID: manifest[keys.CASE_ID].astype(str)})
    info = info.drop_duplicates(keys.CASE_ID).set_index(keys.CASE_ID)[wanted]
    ids = table[keys.CASE_ID].astype(str)
    missing = sorted(set(ids) - set(info.index))
    if missing:
        raise DataError(
            f"evaluation set {name!r}: {len(missing)} predicted case(s) not in the manifest, "
            f"e.g. {missing[0]!r}"
        )
    extra = info.loc[ids].reset_index(drop=True)
    return pd.concat([table.reset_index(drop=True), extra], axis=1)
