"""Subgroup metrics, small-group warnings, largest gaps and the dataset audit table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.sets import evaluate_sets
from medimg.evaluation.subgroups import age_bands, audit_table


def cohort(seed: int, n: int, prefix: str, weak: str = "Acme") -> pd.DataFrame:
    """Cases with attributes; the model separates worse on scanners of manufacturer ``weak``."""
    rng = np.random.default_rng(seed)
    manufacturer = rng.choice(["Acme", "Synth"], n)
    y = (rng.random(n) < 0.4).astype(int)
    strength = np.where(manufacturer == weak, 0.4, 2.5)
    score = rng.normal(0, 1, n) + strength * y
    frame = pd.DataFrame(
        {
            "case_id": [f"{prefix}{i}" for i in range(n)],
            "patient_id": [f"{prefix}p{i // 2}" for i in range(n)],
            "label": y,
            "prob": 1 / (1 + np.exp(-score)),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(25, 85, n).astype(float),
            "site": "A",
            "manufacturer": manufacturer,
        }
    )
    frame.loc[frame.index[:4], "site"] = "tiny"  # a subgroup far too small to say anything
    frame.loc[frame.index[5], "age"] = np.nan
    return frame


def test_age_bands():
    ages = pd.Series([12, 39.9, 40, 59, 60, 95, None])
    assert age_bands(ages).tolist() == ["<40", "<40", "40-59", "40-59", "≥60", "≥60", "unknown"]
    assert age_bands(pd.Series([30, 50, 70]), (45,)).tolist() == ["<45", "≥45", "≥45"]


def test_subgroup_metrics_gaps_and_small_group_warning():
    val, test = cohort(0, 300, "v"), cohort(1, 400, "t")
    cfg = EvaluationConfig(n_resamples=200)
    results = evaluate_sets("classification", {"test": test}, val, config=cfg)
    groups = results["sets"]["test"]["subgroups"]
    assert set(groups) == {"sex", "age_band", "site", "manufacturer"}
    # Each subgroup's AUROC and counts equal sklearn/pandas on that subgroup alone.
    for value, rows in test.groupby("manufacturer"):
        info = groups["manufacturer"]["groups"][value]
        assert info["metrics"]["auroc"]["value"] == pytest.approx(
            roc_auc_score(rows["label"], rows["prob"])
        )
        assert info["n_cases"] == len(rows) and info["n_positive"] == rows["label"].sum()
        assert info["n_patients"] == rows["patient_id"].nunique()
        low, high = info["metrics"]["auroc"]["ci"]
        assert low < info["metrics"]["auroc"]["value"] < high
    gap = groups["manufacturer"]["largest_gap"]["auroc"]
    assert (gap["low_group"], gap["high_group"]) == ("Acme", "Synth")
    assert gap["ci"][0] > 0 and gap["p_value"] < 0.05  # the built-in weakness is detected
    site = groups["site"]["groups"]
    assert site["tiny"]["too_small"] and not site["A"]["too_small"]
    assert (
        "auroc" not in groups["site"]["largest_gap"]
        or groups["site"]["largest_gap"]["auroc"]["includes_small_groups"]
    )
    bands = list(groups["age_band"]["groups"])
    assert bands == ["<40", "40-59", "≥60", "unknown"]  # age order, missing last
    assert groups["age_band"]["groups"]["unknown"]["too_small"]


def test_too_few_positives_is_flagged():
    val, test = cohort(2, 200, "v"), cohort(3, 200, "t")
    test.loc[test["sex"] == "F", "label"] = 0
    test.loc[test[test["sex"] == "F"].index[:5], "label"] = 1  # 5 positives < 10
    cfg = EvaluationConfig(n_resamples=50, attributes=("sex",))
    groups = evaluate_sets("classification", {"test": test}, val, config=cfg)["sets"]["test"][
        "subgroups"
    ]["sex"]["groups"]
    assert groups["F"]["n_positive"] == 5 and groups["F"]["too_small"]
    assert not groups["M"]["too_small"]


def test_missing_attribute_is_reported_not_fatal():
    val, test = cohort(4, 120, "v"), cohort(5, 120, "t").drop(columns="manufacturer")
    cfg = EvaluationConfig(n_resamples=50, attributes=("manufacturer", "sex"))
    groups = evaluate_sets("classification", {"test": test}, val, config=cfg)["sets"]["test"][
        "subgroups"
    ]
    assert groups["manufacturer"]["missing"] and not groups["sex"]["missing"]


def test_audit_table_counts():
    internal = cohort(6, 120, "i").assign(split=["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    external = cohort(7, 50, "e")
    audit = audit_table(internal, {"site_b": external}, ["sex", "age_band", "manufacturer"])
    assert set(audit["set"]) == {"train", "val", "test", "site_b"}
    frames = {s: internal[internal["split"] == s] for s in ("train", "val", "test")}
    frames["site_b"] = external
    for set_name, frame in frames.items():
        rows = audit[audit["set"] == set_name].set_index(["attribute", "group"])
        assert rows.loc[("all", "all"), "cases"] == len(frame)
        assert rows.loc[("all", "all"), "patients"] == frame["patient_id"].nunique()
        for value, group in frame.groupby("sex"):
            assert rows.loc[("sex", value), "cases"] == len(group)
            assert rows.loc[("sex", value), "positives"] == group["label"].sum()
            assert rows.loc[("sex", value), "patients"] == group["patient_id"].nunique()
        old = frame[frame["age"] >= 60]
        assert rows.loc[("age_band", "≥60"), "cases"] == len(old)
    assert "site" not in set(audit["attribute"])  # not asked for
