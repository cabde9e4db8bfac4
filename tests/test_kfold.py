"""Patient-level k-fold assignment: no leakage, every case assigned, seeded, stratified."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medimg.data.errors import DataError
from medimg.data.leakage import check_leakage
from medimg.data.splits import kfold_by_patient


def _frame(n_patients: int = 60) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for study in range(1 + (p % 4 == 0)):  # every fourth patient has two studies
            rows.append({"case_id": f"P{p}_s{study}", "patient_id": f"P{p}", "label": p % 2})
    return pd.DataFrame(rows)


def test_no_patient_in_two_folds_and_every_case_assigned():
    frame = _frame()
    out = kfold_by_patient(frame, n_folds=5, seed=0)
    assert len(out) == len(frame) and out["fold"].notna().all()
    assert set(out["fold"]) == {0, 1, 2, 3, 4}
    assert out.groupby("patient_id")["fold"].nunique().max() == 1
    assert out.attrs == {"n_folds": 5, "fold_seed": 0}
    pd.testing.assert_frame_equal(out.drop(columns=["fold"]), frame)
    sets = {f"fold{k}": rows for k, rows in out.groupby("fold")}
    check_leakage(sets, content_hash=False)


def test_same_seed_same_folds_other_seed_differs_row_order_irrelevant():
    frame = _frame()
    a = kfold_by_patient(frame, 5, seed=3)
    b = kfold_by_patient(frame, 5, seed=3)
    c = kfold_by_patient(frame, 5, seed=4)
    assert a["fold"].tolist() == b["fold"].tolist()
    assert a["fold"].tolist() != c["fold"].tolist()
    shuffled = frame.sample(frac=1.0, random_state=1)
    d = kfold_by_patient(shuffled, 5, seed=3)
    assert d["fold"].reindex(a.index).tolist() == a["fold"].tolist()


def test_stratified_by_label_and_balanced_in_size():
    out = kfold_by_patient(_frame(200), 5, seed=0)
    rates = out.groupby("fold")["label"].mean()
    assert (rates - out["label"].mean()).abs().max() < 0.05
    patients = out.groupby("fold")["patient_id"].nunique()
    assert patients.max() - patients.min() <= 4


def test_without_stratification_and_with_missing_labels():
    frame = _frame(30)
    plain = kfold_by_patient(frame.drop(columns=["label"]), 3, seed=0)
    assert plain.groupby("patient_id")["fold"].nunique().max() == 1
    unstratified = kfold_by_patient(frame, 3, seed=0, stratify=None)
    assert set(unstratified["fold"]) == {0, 1, 2}
    gappy = frame.assign(label=np.where(np.arange(len(frame)) % 7 == 0, np.nan, frame["label"]))
    assert set(kfold_by_patient(gappy, 3, seed=0)["fold"]) == {0, 1, 2}


@pytest.mark.parametrize("n_folds", [1, 0, 31])
def test_bad_fold_counts(n_folds):
    with pytest.raises(
        ValueError, match=r"n_folds must be between 2 and the number of patients \(30\)"
    ):
        kfold_by_patient(_frame(30), n_folds, seed=0)


def test_repeated_index_and_missing_patient_ids():
    frame = pd.concat([_frame(10), _frame(10).assign(patient_id=lambda f: f["patient_id"] + "b")])
    out = kfold_by_patient(frame, 4, seed=0)
    assert out.groupby("patient_id")["fold"].nunique().max() == 1
    frame = frame.reset_index(drop=True)
    frame.loc[3, "patient_id"] = None
    with pytest.raises(DataError, match=r"column 'patient_id' is empty in rows \[3\]"):
        kfold_by_patient(frame, 4, seed=0)
