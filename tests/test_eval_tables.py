"""Per-case tables from predict outputs (every task kind), manifest attributes, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import mean_absolute_error, roc_auc_score

from medimg.data.errors import DataError
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.predict import attach_manifest, summarise
from medimg.evaluation.segmentation import case_arrays, case_metrics, case_table
from medimg.evaluation.sets import evaluate_sets


def batches(prob: torch.Tensor, label: torch.Tensor, key: str = "prob", size: int = 4):
    ids = [f"c{i}" for i in range(len(prob))]
    return [
        {"case_id": ids[i : i + size], key: prob[i : i + size], "label": label[i : i + size]}
        for i in range(0, len(prob), size)
    ]


def test_binary_table_keeps_its_columns_and_metrics():
    gen = torch.Generator().manual_seed(0)
    label = (torch.rand(20, generator=gen) < 0.5).float()
    prob = torch.rand(20, generator=gen) * 0.5 + 0.4 * label
    table, metrics = summarise("classification", batches(prob, label))
    assert list(table.columns) == ["case_id", "prob", "label"]
    assert metrics["auroc"] == pytest.approx(roc_auc_score(label, prob))


def test_multiclass_multilabel_and_regression_tables():
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (30,), generator=gen)
    probs = torch.softmax(torch.randn(30, 3, generator=gen) + 2 * torch.eye(3)[y], 1)
    table, metrics = summarise("classification", batches(probs, y.float()))
    assert {"prob_0", "prob_1", "prob_2", "label"} <= set(table.columns)
    assert metrics["auroc"] == pytest.approx(
        roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr"), abs=1e-6
    )
    Y = (torch.rand(30, 2, generator=gen) < 0.5).float()
    P = torch.sigmoid(torch.randn(30, 2, generator=gen) + 2 * Y - 1)
    table, metrics = summarise("classification", batches(P, Y))
    assert {"prob_0", "prob_1", "label_0", "label_1"} <= set(table.columns)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(Y.numpy(), P.numpy()), abs=1e-6)
    target = torch.randn(30, generator=gen) * 10 + 50
    pred = target + torch.randn(30, generator=gen)
    table, metrics = summarise("regression", batches(pred, target, key="pred"))
    assert list(table.columns) == ["case_id", "pred", "label"]
    assert metrics["mae"] == pytest.approx(mean_absolute_error(target, pred), abs=1e-5)
    # These tables feed the evaluation directly.
    table["patient_id"] = table["case_id"]
    results = evaluate_sets(
        "regression", {"test": table}, config=EvaluationConfig(n_resamples=30, attributes=())
    )
    assert results["mode"] == "regression"
    assert results["sets"]["test"]["metrics"]["mae"]["value"] == pytest.approx(metrics["mae"])


def test_segmentation_case_table_from_outputs():
    gen = torch.Generator().manual_seed(2)
    mask = torch.zeros(3, 1, 12, 12, 6, dtype=torch.long)
    mask[:, :, 3:8, 3:8, 1:5] = 1
    logits = torch.randn(3, 2, 12, 12, 6, generator=gen) + 3 * torch.nn.functional.one_hot(
        mask[:, 0], 2
    ).movedim(-1, 1)
    outputs = [{"case_id": ["a", "b", "c"], "prob": torch.softmax(logits, 1), "mask": mask}]
    table = case_table(outputs, (1.0, 1.0, 2.0), ["lesion"])
    assert list(table["case_id"]) == ["a", "b", "c"]
    direct = case_metrics(logits[1].argmax(0), mask[1], (1.0, 1.0, 2.0), ["lesion"])[0]
    assert table.loc[1, "dice"] == pytest.approx(direct["dice"])
    outputs[0]["pred_mask"] = torch.zeros(3, 1, 12, 12, 6, dtype=torch.long)  # post-processed
    assert (case_table(outputs, (1.0, 1.0, 2.0), ["lesion"])["status"] == "prediction_empty").all()
    arrays = case_arrays(outputs, ["b"])
    assert set(arrays) == {"b"} and np.array_equal(arrays["b"][0], mask[1].numpy())


def test_attach_manifest_adds_patients_and_attributes():
    table = pd.DataFrame({"case_id": ["3", "1"], "prob": [0.2, 0.9], "label": [0, 1]})
    manifest = pd.DataFrame(
        {
            "case_id": [1, 2, 3],
            "patient_id": ["p1", "p2", "p3"],
            "sex": ["F", "M", "F"],
            "age": [30, 50, 70],
            "image": ["/data/1", "/data/2", "/data/3"],
        }
    )
    out = attach_manifest(table, manifest, ["sex", "site"], "test")
    assert list(out["patient_id"]) == ["p3", "p1"] and list(out["age"]) == [70, 30]
    assert "image" not in out and "site" not in out
    with pytest.raises(DataError, match="'test'.*not in the manifest.*'9'"):
        attach_manifest(pd.DataFrame({"case_id": ["9"]}), manifest, [], "test")
    with pytest.raises(DataError, match="patient_id"):
        attach_manifest(table, manifest.drop(columns="patient_id"), [], "test")


def test_bad_tables_are_refused_by_name():
    good = pd.DataFrame(
        {"case_id": ["a", "b"], "patient_id": ["p", "q"], "label": [0, 1], "prob": [0.2, 0.7]}
    )
    cfg = EvaluationConfig(n_resamples=20, attributes=())
    with pytest.raises(DataError, match="'site_b'.*'patient_id'"):
        evaluate_sets(
            "classification", {"site_b": good.drop(columns="patient_id")}, good, config=cfg
        )
    with pytest.raises(DataError, match="'test'.*outside \\[0, 1\\]"):
        evaluate_sets("classification", {"test": good.assign(prob=[0.2, 1.7])}, good, config=cfg)
    with pytest.raises(DataError, match="'test'.*non-finite"):
        evaluate_sets("classification", {"test": good.assign(prob=[0.2, np.nan])}, good, config=cfg)
    with pytest.raises(ValueError, match="validation table"):
        evaluate_sets("classification", {"test": good}, None, config=cfg)
    with pytest.raises(ValueError, match="task kind"):
        evaluate_sets("detection", {"test": good}, good, config=cfg)
    with pytest.raises(ValueError, match="threshold_method"):
        EvaluationConfig(threshold_method="f1")
    with pytest.raises(ValueError, match="n_resamples"):
        EvaluationConfig(n_resamples=0)
