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


@pytest.mark.slow
def test_cross_validation_fold_is_the_val_split_and_is_written_into_the_run(tmp_path, data_dir):
    from tests.conftest import run_dir_of, run_script, train_overrides

    def splits(*extra):
        overrides = train_overrides(
            tmp_path,
            data_dir,
            "export.enabled=false",
            "logger=csv",
            "trainer.limit_train_batches=0.25",
            *extra,
        )
        return pd.read_csv(run_dir_of(run_script("train", *overrides, tmp=tmp_path)) / "splits.csv")

    holdout = splits()
    fold1 = splits("data.fold=1", "data.n_folds=3")
    assert set(fold1.loc[fold1["split"] == "test", "case_id"]) == set(
        holdout.loc[holdout["split"] == "test", "case_id"]
    )
    rest = fold1[fold1["split"] != "test"]
    assert set(rest["fold"].astype(int)) == {0, 1, 2}
    assert (rest["split"] == "val").eq(rest["fold"].astype(int) == 1).all()
    assert rest.groupby("patient_id")["fold"].nunique().max() == 1
