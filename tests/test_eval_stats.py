"""Patient bootstrap and DeLong: correct by construction, honest coverage, paired vs unpaired."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medimg.evaluation import stats, weighted
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.sets import evaluate_sets


def test_patient_weights_keep_patients_together():
    patients = ["a", "a", "b", "c", "c", "c", "d"]
    W = stats.patient_weights(patients, 200, np.random.default_rng(0))
    assert W.shape == (200, 7)
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 3] == W[:, 4]).all() and (W[:, 4] == W[:, 5]).all()
    per_patient = W[:, [0, 2, 3, 6]]
    assert (per_patient.sum(1) == 4).all()  # each resample draws as many patients as there are
    again = stats.patient_weights(patients, 200, np.random.default_rng(0))
    assert np.array_equal(W, again)
    A, B = stats.joint_weights(["a", "b"], ["b", "c"], 100, np.random.default_rng(1))
    assert (A[:, 1] == B[:, 0]).all()  # the shared patient has one draw count in both sets
    assert ((A.sum(1) + B[:, 1]) == 3).all()


def delong_slow(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) straight from the definition: O(m·n) kernel matrix."""
    x, z = p[y == 1], p[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)


@pytest.mark.parametrize("ties", [False, True])
def test_fast_delong_equals_definition(ties):
    rng = np.random.default_rng(2)
    y = (rng.random(150) < 0.4).astype(int)
    p = rng.normal(0, 1, 150) + y
    p = np.round(p, 1) if ties else p
    auc, var = delong_slow(y, p)
    fast = stats.delong_ci(y, p)
    assert fast["auroc"] == pytest.approx(auc, abs=1e-12)
    assert fast["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert fast["se"] ** 2 == pytest.approx(var, rel=1e-10)
    # Paired test: variance of the difference from the definition's joint components.
    q = p + rng.normal(0, 0.8, 150)
    test = stats.delong_paired_test(y, p, q)
    xa, za = p[y == 1], p[y == 0]
    xb, zb = q[y == 1], q[y == 0]
    psi_a = (xa[:, None] > za) + 0.5 * (xa[:, None] == za)
    psi_b = (xb[:, None] > zb) + 0.5 * (xb[:, None] == zb)
    d10, d01 = psi_b.mean(1) - psi_a.mean(1), psi_b.mean(0) - psi_a.mean(0)
    var_diff = d10.var(ddof=1) / len(xa) + d01.var(ddof=1) / len(za)
    assert test["difference"] == pytest.approx(psi_b.mean() - psi_a.mean(), abs=1e-12)
    assert test["se"] ** 2 == pytest.approx(var_diff, rel=1e-10)
    same = stats.delong_paired_test(y, p, p)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def binormal(rng, n_patients: int, cases_per_patient: int, d: float, cluster_sd: float):
    """Scores = d·label + patient effect + case noise (total variance 1), label per patient."""
    label = (rng.random(n_patients) < 0.5).astype(int)
    effect = rng.normal(0, cluster_sd, n_patients)
    patients = np.repeat(np.arange(n_patients), cases_per_patient)
    noise = rng.normal(0, np.sqrt(1 - cluster_sd**2), len(patients))
    y = label[patients]
    return y, d * y + effect[patients] + noise, patients


def test_patient_bootstrap_auroc_interval_covers_truth():
    """Clustered data (3 correlated cases per patient): the patient bootstrap stays honest.

    Control: resampling cases instead of patients treats correlated cases as independent
    evidence, and its intervals are too narrow (coverage well below 90%).
    """
    rng = np.random.default_rng(10)
    d = 1.2
    truth = norm.cdf(d / np.sqrt(2))  # AUROC between two patients' cases, binormal, variance 1
    by_patient = by_case = 0
    for _ in range(200):
        y, p, patients = binormal(rng, 70, 3, d, cluster_sd=0.8)
        W = stats.patient_weights(patients, 300, rng)
        low, high = stats.percentile_ci(weighted.ranking(y, p, W)["auroc"])
        by_patient += low <= truth <= high
        W = stats.patient_weights(np.arange(len(y)), 300, rng)
        low, high = stats.percentile_ci(weighted.ranking(y, p, W)["auroc"])
        by_case += low <= truth <= high
    assert 0.90 <= by_patient / 200 <= 0.99
    assert by_case / 200 < 0.90


def test_delong_and_bootstrap_cover_truth_on_independent_cases():
    rng = np.random.default_rng(11)
    d = 1.0
    truth = norm.cdf(d / np.sqrt(2))
    delong = boot = 0
    for _ in range(200):
        y, p, patients = binormal(rng, 200, 1, d, cluster_sd=0.0)
        low, high = stats.delong_ci(y, p)["ci"]
        delong += low <= truth <= high
        W = stats.patient_weights(patients, 300, rng)
        low, high = stats.percentile_ci(weighted.ranking(y, p, W)["auroc"])
        boot += low <= truth <= high
    assert 0.90 <= delong / 200 <= 0.99
    assert 0.90 <= boot / 200 <= 0.99


def test_bootstrap_p_value_agrees_with_interval():
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.05, 0.2):
        d = rng.normal(shift, 0.1, 999)
        low, high = stats.percentile_ci(d)
        assert (stats.bootstrap_p_value(d) < 0.05) == (low > 0 or high < 0)


def case_table(seed: int, n: int, prefix: str, shift: float = 1.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + shift * y - 0.6)))
    return pd.DataFrame(
        {
            "case_id": [f"{prefix}{i}" for i in range(n)],
            "patient_id": [f"{prefix}p{i // 2}" for i in range(n)],
            "label": y,
            "prob": p,
        }
    )


def test_internal_vs_external_unpaired_and_paired():
    val, test = case_table(0, 120, "v"), case_table(1, 200, "t")
    external = case_table(2, 200, "e", shift=0.5)  # another hospital: worse separation
    retest = test.assign(
        prob=np.clip(test["prob"] + np.random.default_rng(4).normal(0, 0.1, 200), 0, 1)
    )
    cfg = EvaluationConfig(n_resamples=300, attributes=())
    results = evaluate_sets(
        "classification", {"test": test, "external": external, "retest": retest}, val, config=cfg
    )
    ext = results["comparisons"]["external"]
    assert ext["design"] == "unpaired" and ext["shared_patients"] == 0 and ext["against"] == "test"
    auroc = ext["metrics"]["auroc"]
    sets = results["sets"]
    assert auroc["difference"] == pytest.approx(
        sets["external"]["metrics"]["auroc"]["value"] - sets["test"]["metrics"]["auroc"]["value"]
    )
    assert auroc["ci"][1] < 0 and auroc["p_value"] < 0.05  # the drop is detected
    paired = results["comparisons"]["retest"]
    assert paired["design"] == "paired" and paired["shared_patients"] == 100
    direct = stats.delong_paired_test(test["label"], test["prob"], retest["prob"])
    assert paired["delong_paired"]["difference"] == pytest.approx(direct["difference"])
    # Pairing removes the between-case variance: the paired interval is much narrower.
    width = lambda c: c["ci"][1] - c["ci"][0]  # noqa: E731
    assert width(paired["metrics"]["auroc"]) < 0.5 * width(auroc)
