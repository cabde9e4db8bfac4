"""Segmentation metrics equal MONAI's metric classes (in mm) and empty cases follow the convention."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
    SurfaceDistanceMetric,
)

from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.segmentation import case_metrics, labels_from_probs, rank_cases
from medimg.evaluation.sets import evaluate_sets

SPACING = (0.8, 1.2, 2.5)
CLASSES = ["organ", "lesion"]


def blobs(seed: int, shape=(24, 20, 12)) -> tuple[np.ndarray, np.ndarray]:
    """A reference with two labelled boxes and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, dtype=int)
    ref[3:15, 4:14, 2:9] = 1
    ref[16:21, 5:10, 4:8] = 2
    pred = ref.copy()
    noise = rng.random(shape)
    pred[(noise < 0.08) & (ref > 0)] = 0
    pred[(noise > 0.97) & (ref == 0)] = rng.integers(1, 3)
    pred = np.roll(pred, shift=rng.integers(-1, 2, 3), axis=(0, 1, 2))
    return pred, ref


def monai_reference(pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """The same metrics through MONAI's cumulative metric classes (one-hot, no background)."""
    onehot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a), 3).movedim(-1, 0)[None]  # noqa: E731
    p, r = onehot(pred).double(), onehot(ref).double()
    out = {}
    for name, metric in {
        "dice": DiceMetric(include_background=False, reduction="none"),
        "iou": MeanIoU(include_background=False, reduction="none"),
        "hd95_mm": HausdorffDistanceMetric(
            include_background=False, percentile=95, reduction="none"
        ),
        "asd_mm": SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none"),
        "nsd": SurfaceDiceMetric([2.0, 2.0], include_background=False, reduction="none"),
    }.items():
        metric(p, r, spacing=list(SPACING)) if name not in ("dice", "iou") else metric(p, r)
        out[name] = metric.aggregate()[0].numpy()
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_case_metrics_equal_monai(seed):
    pred, ref = blobs(seed)
    rows = case_metrics(pred, ref[None], SPACING, CLASSES, tolerance_mm=2.0)
    ref_metrics = monai_reference(pred, ref)
    voxel_ml = np.prod(SPACING) / 1000
    for k, row in enumerate(rows):
        assert row["class"] == CLASSES[k] and row["status"] == "ok"
        for name, values in ref_metrics.items():
            assert row[name] == pytest.approx(float(values[k]), abs=1e-6), name
        v_ref, v_pred = (ref == k + 1).sum() * voxel_ml, (pred == k + 1).sum() * voxel_ml
        assert row["volume_reference_ml"] == pytest.approx(v_ref)
        assert row["volume_error_ml"] == pytest.approx(v_pred - v_ref)
        assert row["abs_volume_error_ml"] == pytest.approx(abs(v_pred - v_ref))
        assert row["rel_volume_error"] == pytest.approx((v_pred - v_ref) / v_ref)


def test_distances_use_the_spacing():
    pred, ref = blobs(2)
    iso = case_metrics(pred, ref, (1.0, 1.0, 1.0), CLASSES)
    aniso = case_metrics(pred, ref, SPACING, CLASSES)
    assert iso[0]["hd95_mm"] != pytest.approx(aniso[0]["hd95_mm"])
    assert iso[0]["dice"] == pytest.approx(aniso[0]["dice"])  # overlap does not depend on mm


def test_empty_reference_and_prediction_conventions():
    ref = np.zeros((10, 10, 6), dtype=int)
    ref[2:6, 2:6, 1:4] = 1  # class 1 present, class 2 absent from the reference
    pred = np.zeros_like(ref)
    pred[7:9, 7:9, 2:4] = 2  # class 1 missed, class 2 falsely detected
    rows = {r["class"]: r for r in case_metrics(pred, ref, SPACING, CLASSES)}
    assert rows["organ"]["status"] == "prediction_empty"
    assert rows["lesion"]["status"] == "reference_empty"
    for row in rows.values():
        assert row["dice"] == 0 and row["iou"] == 0 and row["nsd"] == 0
        assert math.isnan(row["hd95_mm"]) and math.isnan(row["asd_mm"])
    assert math.isnan(rows["lesion"]["rel_volume_error"])
    both = case_metrics(np.zeros_like(ref), np.zeros_like(ref), SPACING, CLASSES)
    for row in both:
        assert row["status"] == "both_empty"
        assert (row["dice"], row["iou"], row["nsd"], row["hd95_mm"], row["asd_mm"]) == (
            1,
            1,
            1,
            0,
            0,
        )


def test_labels_from_probs_and_shape_errors():
    probs = torch.softmax(torch.randn(3, 8, 8, 4), 0)
    assert torch.equal(labels_from_probs(probs), probs.argmax(0))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((8, 8, 4)), np.zeros((8, 8, 5)), SPACING, CLASSES)
    with pytest.raises(ValueError, match="tolerances"):
        case_metrics(np.zeros((8, 8, 4)), np.zeros((8, 8, 4)), SPACING, CLASSES, [1.0])


def test_set_evaluation_means_and_empty_counts():
    rows = []
    for case in range(8):
        pred, ref = blobs(case)
        if case == 0:
            pred[pred == 2] = 0  # a missed lesion
        if case == 1:
            ref[ref == 2] = 0
            pred[pred == 2] = 0  # a case without lesion, correctly empty
        for row in case_metrics(pred, ref, SPACING, CLASSES):
            rows.append({"case_id": f"c{case}", "patient_id": f"p{case // 2}", **row})
    table = pd.DataFrame(rows)
    cfg = EvaluationConfig(n_resamples=50, attributes=(), classes=CLASSES)
    results = evaluate_sets("segmentation", {"test": table}, config=cfg)
    block = results["sets"]["test"]
    lesion = table[table["class"] == "lesion"]
    assert block["per_class"]["lesion"]["dice"]["value"] == pytest.approx(lesion["dice"].mean())
    assert block["per_class"]["lesion"]["hd95_mm"]["value"] == pytest.approx(
        lesion["hd95_mm"].dropna().mean()
    )
    macro = np.mean([table[table["class"] == c]["dice"].mean() for c in CLASSES])
    assert block["metrics"]["dice"]["value"] == pytest.approx(macro)
    assert block["counts"]["lesion/n_prediction_empty"] == 1
    assert block["counts"]["lesion/n_both_empty"] == 1
    assert block["counts"]["n_cases"] == 8 and block["counts"]["n_patients"] == 4
    low, high = block["metrics"]["dice"]["ci"]
    assert low <= block["metrics"]["dice"]["value"] <= high
    ranked = rank_cases(table)
    per_case = table.groupby("case_id")["dice"].mean()
    assert ranked["best"] == per_case.idxmax() and ranked["worst"] == per_case.idxmin()
