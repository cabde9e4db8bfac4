"""Patient-level train/val/test splits, stratified by label and fixed by a seed."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from medimg.data import keys

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
