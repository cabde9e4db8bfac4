"""Patient-level splits: no leakage, stratified, deterministic by seed."""

from __future__ import annotations

import pandas as pd
import pytest

from medimg.data.splits import split_by_patient


def _frame(n_patients=60, seed=0):
    rows = []
    for p in range(n_patients):
        for study in range(1 + (p % 5 == 0)):  # every fifth patient has two studies
            rows.append({"case_id": f"P{p}_s{study}", "patient_id": f"P{p}", "label": p % 2})
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits():
    out = split_by_patient(_frame(), 0.15, 0.2, seed=1)
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    assert set(out["split"]) == {"train", "val", "test"}


def test_same_seed_same_split_other_seed_differs():
    a = split_by_patient(_frame(), 0.15, 0.2, seed=3)
    b = split_by_patient(_frame(), 0.15, 0.2, seed=3)
    c = split_by_patient(_frame(), 0.15, 0.2, seed=4)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_stratified_by_label():
    out = split_by_patient(_frame(200), 0.15, 0.2, seed=0)
    rates = out.groupby("split")["label"].mean()
    assert (rates - 0.5).abs().max() < 0.1


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.5, 0.5), (0.2, 1.2)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError, match="val_fraction and test_fraction"):
        split_by_patient(_frame(), val, test, seed=0)
