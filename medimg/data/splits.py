"""Patient-level train/val/test splits and k-fold assignments, stratified by label and seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from medimg.data import keys
from medimg.data.errors import DataError

SPLITS = ("train", "val", "test")


def split_by_patient(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: str | None = keys.LABEL,
) -> pd.DataFrame:
    """Assign every case to ``train``/``val``/``test`` so that no patient spans two splits.

    Patients are stratified by their highest label when ``stratify`` names a column.

    Returns:
        A copy of ``frame`` with a ``split`` column.
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    patients = frame.groupby(keys.PATIENT_ID, sort=True)
    table = pd.DataFrame({keys.PATIENT_ID: list(patients.groups)})
    strata = None
    if stratify and stratify in frame.columns:
        strata = patients[stratify].max().reindex(table[keys.PATIENT_ID]).to_numpy()
    rest, test = train_test_split(
        table, test_size=test_fraction, random_state=seed, stratify=strata
    )
    rest_strata = None if strata is None else strata[rest.index]
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1.0 - test_fraction),
        random_state=seed,
        stratify=rest_strata,
    )
    assignment = {p: "train" for p in train[keys.PATIENT_ID]}
    assignment.update({p: "val" for p in val[keys.PATIENT_ID]})
    assignment.update({p: "test" for p in test[keys.PATIENT_ID]})
    out = frame.copy()
    out["split"] = out[keys.PATIENT_ID].map(assignment)
    return out


def kfold_by_patient(
    frame: pd.DataFrame,
    n_folds: int,
    seed: int,
    stratify: str | None = keys.LABEL,
) -> pd.DataFrame:
    """Assign every case to one of ``n_folds`` folds so that no patient spans two folds.

    Uses scikit-learn's ``StratifiedGroupKFold`` (groups = ``patient_id``, shuffled by
    ``seed``); cases are stratified by ``stratify`` when it names a column (empty values
    form their own stratum), as :func:`split_by_patient` does. The result does not depend
    on the order of the rows.

    Args:
        frame: a manifest with ``case_id`` and ``patient_id``.
        n_folds: number of folds, at least 2 and at most the number of patients.
        seed: fixes the assignment.
        stratify: column to balance across folds, or None.

    Returns:
        A copy of ``frame`` with an integer ``fold`` column (0 … ``n_folds`` - 1);
        ``attrs`` records ``n_folds`` and ``fold_seed``.

    Raises:
        DataError: a case has no ``patient_id``.
        ValueError: ``n_folds`` is below 2 or above the number of patients.
    """
    if frame[keys.PATIENT_ID].isna().any():
        rows = frame.index[frame[keys.PATIENT_ID].isna()].tolist()
        raise DataError(f"column 'patient_id' is empty in rows {rows[:10]}; every case needs one")
    n_patients = frame[keys.PATIENT_ID].nunique()
    if not 2 <= n_folds <= n_patients:
        raise ValueError(
            f"n_folds must be between 2 and the number of patients ({n_patients}), got {n_folds}"
        )
    ordered = frame.reset_index(drop=True).sort_values(
        [keys.PATIENT_ID, keys.CASE_ID], kind="stable"
    )
    strata = np.zeros(len(ordered), dtype=int)
    if stratify and stratify in frame.columns:
        strata = pd.factorize(ordered[stratify].astype(str), sort=True)[0]
    folds = np.zeros(len(frame), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(ordered, strata, ordered[keys.PATIENT_ID])):
        folds[ordered.index[held_out]] = fold
    out = frame.copy()
    out["fold"] = folds
    out.attrs.update(n_folds=n_folds, fold_seed=seed)
    return out
