"""Turning model outputs into per-case prediction tables and set metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from medimg.data import keys
from medimg.evaluation.metrics import (
    classification_metrics,
    segmentation_case_metrics,
    segmentation_metrics,
)
from medimg.files import write_atomic


def summarise(kind: str, outputs: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Per-case table and set metrics from ``predict_step`` outputs (one dict per batch).

    Args:
        kind: ``classification`` or ``segmentation``.
        outputs: dicts with ``case_id``, ``prob`` and ``label`` or ``mask``.
    """
    rows: list[dict] = []
    for batch in outputs:
        for index, case_id in enumerate(batch[keys.CASE_ID]):
            prob = batch["prob"][index]
            if kind == "classification":
                row = {keys.CASE_ID: case_id, "prob": float(prob.reshape(-1)[-1])}
                if keys.LABEL in batch:
                    row[keys.LABEL] = int(batch[keys.LABEL][index])
            else:
                row = {keys.CASE_ID: case_id}
                if keys.MASK in batch:
                    row.update(segmentation_case_metrics(prob, batch[keys.MASK][index]))
            rows.append(row)
    table = pd.DataFrame(rows)
    if kind == "classification":
        metrics = (
            classification_metrics(table[keys.LABEL].to_numpy(), table["prob"].to_numpy())
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
