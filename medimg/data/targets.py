"""Which manifest columns a study learns from: the target, the mask and clinical covariates.

One manifest can serve several studies (the built-in CT manifest carries a lesion label, a lesion
mask, an organ label map, a lesion volume and an outcome), so the config names the columns and
this module maps them onto the fields a batch carries (``label``, ``mask``, ``covariates``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medimg.data import keys
from medimg.data.errors import DataError


@dataclass(frozen=True)
class StudyColumns:
    """Manifest columns of a study.

    Args:
        label: the target column, or a list of 0/1 columns for multi-label classification.
        mask: the label-map column for segmentation.
        covariates: numeric (or two-level categorical) columns joined with the image features.
    """

    label: str | list[str] = keys.LABEL
    mask: str = keys.MASK
    covariates: list[str] = field(default_factory=list)

    @property
    def multilabel(self) -> bool:
        return not isinstance(self.label, str)

    def source_columns(self, task: str) -> list[str]:
        """Columns the manifest must have for ``task``, as the manifest spells them."""
        base = [keys.CASE_ID, keys.PATIENT_ID, keys.IMAGE]
        if task == "segmentation":
            base.append(self.mask)
        else:
            base += [self.label] if isinstance(self.label, str) else list(self.label)
        return base + list(self.covariates)


def map_columns(frame: pd.DataFrame, columns: StudyColumns, task: str) -> pd.DataFrame:
    """A copy of ``frame`` whose ``label``/``mask`` are the study's columns.

    Multi-label targets become one list of 0/1 per case in ``label``.
    """
    out = frame.copy()
    if task == "segmentation":
        if columns.mask != keys.MASK:
            out[keys.MASK] = out[columns.mask]
    elif columns.multilabel:
        out[keys.LABEL] = out[list(columns.label)].astype(float).values.tolist()
    elif columns.label != keys.LABEL:
        out[keys.LABEL] = out[columns.label]
    return out


def target_problems(frame: pd.DataFrame, columns: StudyColumns, task: str) -> list[str]:
    """One message per row whose target cannot be learned from (``row N (case X): ...``)."""
    if task == "segmentation":
        return []
    names = [columns.label] if isinstance(columns.label, str) else list(columns.label)
    problems = []
    for row_number, (_, row) in enumerate(frame.iterrows(), start=2):
        for name in names:
            value = pd.to_numeric(pd.Series([row[name]]), errors="coerce").iloc[0]
            problem = None
            if pd.isna(value) or not np.isfinite(value):
                problem = f"expected a number, got {row[name]!r}"
            elif task == "classification" and columns.multilabel and value not in (0, 1):
                problem = f"expected 0 or 1 (multi-label), got {row[name]!r}"
            elif task == "classification" and (value != int(value) or value < 0):
                problem = f"expected an integer class >= 0, got {row[name]!r}"
            if problem:
                problems.append(
                    f"row {row_number} (case {row[keys.CASE_ID]}): column '{name}': {problem}"
                )
    return problems


@dataclass(frozen=True)
class CovariateCoding:
    """How covariate columns become numbers: two-level text columns map to 0/1.

    Levels come from the training split only (sorted; the second level codes 1), so evaluation
    on another site codes values the same way; an unseen level is an error, not a silent 0.
    """

    columns: list[str]
    levels: dict[str, list[str]]

    @classmethod
    def fit(cls, train: pd.DataFrame, columns: list[str], source: str | Path) -> CovariateCoding:
        levels: dict[str, list[str]] = {}
        for name in columns:
            values = train[name].dropna()
            if pd.to_numeric(values, errors="coerce").notna().all():
                continue
            found = sorted(str(v) for v in values.unique())
            if len(found) > 2:
                raise DataError(
                    f"{source}: covariate column '{name}' has {len(found)} text levels "
                    f"{found[:5]}; only two-level text columns are coded (0/1): one-hot encode it "
                    f"in the manifest"
                )
            levels[name] = found
        return cls(list(columns), levels)

    def transform(self, frame: pd.DataFrame, source: str | Path) -> np.ndarray:
        """(cases, covariates) float32 matrix with NaN where a value is missing."""
        out = np.full((len(frame), len(self.columns)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.columns):
            values = frame[name]
            if name in self.levels:
                codes = {level: float(i) for i, level in enumerate(self.levels[name])}
                unseen = sorted({str(v) for v in values.dropna()} - set(codes))
                if unseen:
                    raise DataError(
                        f"{source}: covariate column '{name}' has level(s) {unseen} that the "
                        f"training split does not have (known: {self.levels[name]})"
                    )
                out[:, j] = [codes[str(v)] if pd.notna(v) else np.nan for v in values]
            else:
                numbers = pd.to_numeric(values, errors="coerce")
                bad = values.notna() & numbers.isna()
                if bad.any():
                    row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
                    raise DataError(
                        f"{source} row {row}: covariate column '{name}': expected a number, "
                        f"got {values[bad].iloc[0]!r}"
                    )
                out[:, j] = numbers.to_numpy(dtype=np.float32)
        return out


def strata(frame: pd.DataFrame, task: str, multilabel: bool) -> pd.Series | None:
    """What patient splits balance: the class, the number of findings or target quartiles."""
    if task == "segmentation" or keys.LABEL not in frame:
        return None
    if multilabel:
        return frame[keys.LABEL].map(lambda v: int(sum(v))).clip(upper=2)
    if task == "regression":
        values = pd.to_numeric(frame[keys.LABEL])
        return pd.qcut(values.rank(method="first"), q=4, labels=False)
    return frame[keys.LABEL]
