"""Classification and regression metrics equal scikit-learn's (and torchmetrics' ECE) to 1e-6."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from torchmetrics.functional.classification import binary_calibration_error

from medimg.evaluation import weighted
from medimg.evaluation.classification import (
    BINARY_METRICS,
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    multilabel_metrics,
    regression_metrics,
)
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.problem import Problem, point_metrics, sample_metrics
from medimg.evaluation.sets import evaluate_sets

TOL = 1e-6


def binary_data(n: int = 300, seed: int = 0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 0.5)))
    return y, (np.round(p, 1) if ties else p)


def sklearn_binary(y, p, t, n_bins=10) -> dict:
    """Every binary metric straight from scikit-learn / torchmetrics (the references)."""
    pred = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    fit = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-12, max_iter=10_000)
    fit.fit(np.log(p / (1 - p))[:, None], y)
    return {
        "auroc": skm.roc_auc_score(y, p),
        "auprc": skm.average_precision_score(y, p),
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "sensitivity": skm.recall_score(y, pred),
        "specificity": tn / (tn + fp),
        "ppv": skm.precision_score(y, pred),
        "npv": tn / (tn + fn),
        "f1": skm.f1_score(y, pred),
        "brier": skm.brier_score_loss(y, p),
        "ece": float(
            binary_calibration_error(torch.tensor(p), torch.tensor(y), n_bins=n_bins, norm="l1")
        ),
        "calibration_intercept": fit.intercept_[0],
        "calibration_slope": fit.coef_[0, 0],
    }


@pytest.mark.parametrize("ties", [False, True])
def test_binary_point_metrics_equal_sklearn(ties):
    y, p = binary_data(ties=ties)
    p = np.clip(p, 0.01, 0.99)  # the reference logit has no clipping
    ours, ref = binary_metrics(y, p, 0.4), sklearn_binary(y, p, 0.4)
    assert set(ours) == set(BINARY_METRICS)
    for name in BINARY_METRICS:
        assert ours[name] == pytest.approx(ref[name], abs=TOL), name


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_engine_equals_sklearn_on_repeated_cases(ties):
    """Integer case weights = repeating cases; every weighted metric matches sklearn on repeats."""
    y, p = binary_data(n=150, seed=1, ties=ties)
    p = np.clip(p, 0.01, 0.99)
    W = np.random.default_rng(2).integers(0, 3, size=(4, len(y))).astype(float)
    engine = {
        **weighted.ranking(y, p, W),
        **weighted.confusion(y, p >= 0.45, W),
        **weighted.calibration(y, p, W),
    }
    for row in range(len(W)):
        reps = W[row].astype(int)
        ref = sklearn_binary(np.repeat(y, reps), np.repeat(p, reps), 0.45)
        for name in BINARY_METRICS:
            assert engine[name][row] == pytest.approx(ref[name], abs=TOL), (name, row)


def test_undefined_metrics_are_nan():
    y = np.zeros(20, dtype=int)
    p = np.linspace(0.1, 0.9, 20)
    m = binary_metrics(y, p, 0.5)
    assert np.isnan(m["auroc"]) and np.isnan(m["sensitivity"]) and np.isnan(m["calibration_slope"])
    engine = weighted.ranking(y, p, np.ones((2, 20)))
    assert np.isnan(engine["auroc"]).all()


def test_separated_classes_have_no_calibration_fit():
    """Perfect separation has no maximum-likelihood slope: NaN in both estimates, not a huge number."""
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    p = np.r_[np.linspace(0.05, 0.45, 30), np.linspace(0.55, 0.95, 30)]
    assert np.isnan(binary_metrics(y, p, 0.5)["calibration_slope"])
    a, b = weighted.recalibration(y, p, np.ones((3, 60)))
    assert np.isnan(a).all() and np.isnan(b).all()
    p[0] = 0.9  # one overlap: the fit exists again and matches sklearn
    ref = sklearn_binary(y, p, 0.5)
    assert binary_metrics(y, p, 0.5)["calibration_slope"] == pytest.approx(
        ref["calibration_slope"], abs=TOL
    )


def test_multiclass_and_multilabel_equal_sklearn():
    rng = np.random.default_rng(3)
    n, k = 240, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    thresholds = [0.3, 0.4, 0.5]
    ours = multiclass_metrics(y, probs, thresholds)
    assert ours["macro"]["auroc"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=TOL
    )
    assert ours["overall"]["accuracy"] == pytest.approx(
        skm.accuracy_score(y, probs.argmax(1)), abs=TOL
    )
    for c in range(k):
        ref = sklearn_binary((y == c).astype(int), probs[:, c], thresholds[c])
        for name in ("auroc", "auprc", "sensitivity", "specificity", "ppv", "f1", "brier"):
            assert ours["per_class"][c][name] == pytest.approx(ref[name], abs=TOL)
    Y = (rng.random((n, k)) < 0.4).astype(int)
    P = 1 / (1 + np.exp(-(rng.normal(0, 1, (n, k)) + 1.2 * Y - 0.6)))
    ml = multilabel_metrics(Y, P, thresholds)
    assert ml["macro"]["auroc"] == pytest.approx(skm.roc_auc_score(Y, P, average="macro"), abs=TOL)
    assert ml["macro"]["auprc"] == pytest.approx(
        skm.average_precision_score(Y, P, average="macro"), abs=TOL
    )
    assert ml["macro"]["f1"] == pytest.approx(
        skm.f1_score(Y, (P >= np.array(thresholds)).astype(int), average="macro"), abs=TOL
    )


def test_multiclass_bootstrap_engine_matches_point_metrics():
    """Unit weights reproduce the point estimates, including argmax balanced accuracy."""
    rng = np.random.default_rng(4)
    n, k = 120, 3
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n) * 0.7 + 0.3 * np.eye(k)[y]
    table = pd.DataFrame({"label": y, **{f"prob_{c}": probs[:, c] for c in range(k)}})
    problem = Problem("multiclass", classes=["a", "b", "c"], thresholds=[0.4, 0.4, 0.4])
    point = point_metrics(problem, table)
    samples = sample_metrics(problem, table, np.ones((1, n)))
    assert point["argmax_balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, probs.argmax(1)), abs=TOL
    )
    for name, value in point.items():
        assert samples[name][0] == pytest.approx(value, abs=TOL, nan_ok=True), name


def test_regression_equals_sklearn_and_scipy():
    rng = np.random.default_rng(5)
    y = rng.normal(50, 10, 200)
    pred = y + rng.normal(2, 5, 200)
    ours = regression_metrics(y, pred)
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=TOL)
    assert ours["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=TOL)
    assert ours["r2"] == pytest.approx(skm.r2_score(y, pred), abs=TOL)
    assert ours["pearson_r"] == pytest.approx(pearsonr(y, pred).statistic, abs=TOL)
    W = rng.integers(0, 3, (3, 200)).astype(float)
    engine = weighted.regression(y, pred, W)
    for row in range(3):
        reps = W[row].astype(int)
        ref = regression_metrics(np.repeat(y, reps), np.repeat(pred, reps))
        for name, value in ref.items():
            assert engine[name][row] == pytest.approx(value, abs=TOL), name


def test_youden_and_target_sensitivity_thresholds():
    y, p = binary_data(n=200, seed=6)
    t = choose_threshold(y, p, "youden")
    candidates = np.unique(p)
    youden = [
        ((p >= c) & (y == 1)).sum() / y.sum() - ((p >= c) & (y == 0)).sum() / (1 - y).sum()
        for c in candidates
    ]
    assert t == pytest.approx(candidates[int(np.argmax(youden))])
    t90 = choose_threshold(y, p, "sensitivity", target=0.9)
    sens = lambda c: ((p >= c) & (y == 1)).sum() / y.sum()  # noqa: E731
    assert sens(t90) >= 0.9
    assert sens(candidates[candidates > t90].min()) < 0.9  # the next higher one misses the target
    with pytest.raises(ValueError, match="threshold method"):
        choose_threshold(y, p, "f1")
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.ones(5), np.linspace(0, 1, 5))


def test_operating_point_from_val_is_applied_unchanged_to_test():
    def table(seed: int, shift: float) -> pd.DataFrame:
        y, p = binary_data(n=200, seed=seed)
        p = np.clip(p + shift, 0, 1)
        ids = [f"{seed}-{i}" for i in range(len(y))]
        return pd.DataFrame({"case_id": ids, "patient_id": ids, "label": y, "prob": p})

    val, test = table(7, 0.0), table(8, 0.1)
    cfg = EvaluationConfig(n_resamples=50, attributes=())
    results = evaluate_sets("classification", {"test": test}, val, config=cfg)
    threshold = results["operating_point"]["thresholds"]["positive"]
    assert threshold == choose_threshold(val["label"], val["prob"])  # from val, not from test
    assert threshold != choose_threshold(test["label"], test["prob"])
    pred = test["prob"] >= threshold
    expected = (pred & (test["label"] == 1)).sum() / test["label"].sum()
    assert results["sets"]["test"]["metrics"]["sensitivity"]["value"] == pytest.approx(expected)
    sensitivity = EvaluationConfig(n_resamples=50, attributes=(), threshold_method="sensitivity")
    other = evaluate_sets("classification", {"test": test}, val, config=sensitivity)
    assert other["operating_point"]["thresholds"]["positive"] == choose_threshold(
        val["label"], val["prob"], "sensitivity", 0.9
    )
