"""Tasks: loss options, stage metrics against scikit-learn/NumPy, covariates, compile, regression."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from medimg.tasks import ClassificationTask, RegressionTask, SegmentationTask
from medimg.tasks.base import monitor_mode

ADAM = partial(torch.optim.Adam, lr=1e-3)


class PassThrough(nn.Module):
    """Returns the first ``k`` image values as logits, so a test chooses the outputs exactly."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.flatten(1)[:, : self.k]


class LabelMapNet(nn.Module):
    """Turns a label map given as the image into confident logits for ``classes`` classes."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 10.0 * F.one_hot(image[:, 0].long(), self.classes).movedim(-1, 1).float()


def _trainer() -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader(**columns) -> DataLoader:
    n = len(next(iter(columns.values())))
    rows = [{k: v[i] for k, v in columns.items()} | {"case_id": f"c{i}"} for i in range(n)]
    return DataLoader(rows, batch_size=7)


def _validate(task: L.LightningModule, **columns) -> dict[str, float]:
    return _trainer().validate(task, dataloaders=_loader(**columns), verbose=False)[0]


# --- classification losses -------------------------------------------------------------------


def _cls_loss(num_classes: int, loss: dict | None, multilabel: bool = False):
    task = ClassificationTask(
        PassThrough(num_classes),
        ADAM,
        num_classes=num_classes,
        loss=loss,
        multilabel=multilabel,
        label_names=None,
    )
    return task.loss


def test_binary_ce_class_weights_are_a_positive_weight():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(12, 1)), rng.integers(0, 2, 12).astype(float)
    p = 1 / (1 + np.exp(-logits[:, 0]))
    w_neg, w_pos = 2.0, 6.0
    expected = np.mean(-(w_pos / w_neg) * y * np.log(p) - (1 - y) * np.log(1 - p))
    got = _cls_loss(1, {"name": "ce", "class_weights": [w_neg, w_pos]})(
        torch.tensor(logits), torch.tensor(y)
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
    plain = _cls_loss(1, None)(torch.tensor(logits), torch.tensor(y))
    assert plain.item() == pytest.approx(np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p)))


def test_multiclass_ce_class_weights_follow_the_weighted_mean():
    rng = np.random.default_rng(1)
    logits, y = rng.normal(size=(10, 3)), rng.integers(0, 3, 10)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    w = np.array([1.0, 2.0, 5.0])
    expected = np.sum(-w[y] * log_p[np.arange(10), y]) / w[y].sum()
    got = _cls_loss(3, {"name": "ce", "class_weights": w.tolist()})(
        torch.tensor(logits), torch.tensor(y, dtype=torch.float32)
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_binary_focal_matches_the_focal_formula():
    rng = np.random.default_rng(2)
    logits, y = rng.normal(size=(16,)), rng.integers(0, 2, 16).astype(float)
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(y == 1, p, 1 - p)
    alpha = np.where(y == 1, 3.0, 1.0)  # class_weights [1, 3]: positives weigh 3
    expected = np.mean(-alpha * (1 - p_t) ** 2.0 * np.log(p_t))
    loss = _cls_loss(1, {"name": "focal", "gamma": 2.0, "class_weights": [1, 3]})
    assert loss(torch.tensor(logits), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("multilabel", [False, True])
def test_focal_with_gamma_zero_is_the_weighted_cross_entropy(multilabel):
    rng = np.random.default_rng(3)
    k = 3 if multilabel else 1
    logits = torch.tensor(rng.normal(size=(20, k)))
    y = torch.tensor(rng.integers(0, 2, (20, k) if multilabel else 20).astype(float))
    weights = [2.0, 0.5, 4.0] if multilabel else [2.0, 5.0]
    focal = _cls_loss(k, {"name": "focal", "gamma": 0.0, "class_weights": weights}, multilabel)
    ce = _cls_loss(k, {"name": "ce", "class_weights": weights}, multilabel)
    assert focal(logits, y).item() == pytest.approx(ce(logits, y).item(), rel=1e-5)


def test_multiclass_focal_with_gamma_zero_scales_the_cross_entropy_terms():
    rng = np.random.default_rng(4)
    logits, y = torch.tensor(rng.normal(size=(9, 4))), torch.tensor(rng.integers(0, 4, 9))
    w = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    focal = _cls_loss(4, {"name": "focal", "gamma": 0.0, "class_weights": w.tolist()})
    per_case = F.cross_entropy(logits, y, reduction="none") * w[y]
    # MONAI's focal loss averages over every (case, class) element of the one-hot target.
    assert focal(logits, y.float()).item() == pytest.approx(
        per_case.sum().item() / (9 * 4), rel=1e-5
    )


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "hinge"}, "task.loss.name"),
        ({"name": "ce", "class_weights": [1.0]}, "class_weights must have 2"),
        ({"name": "focal", "gamma": -1}, "gamma"),
        ({"name": "ce", "weights": [1, 2]}, "unknown keys"),
    ],
)
def test_bad_classification_loss_is_refused(loss, message):
    with pytest.raises(ValueError, match=message):
        _cls_loss(1, loss)


# --- classification metrics ------------------------------------------------------------------


def test_multilabel_auroc_equals_sklearn_macro_and_per_label():
    rng = np.random.default_rng(5)
    names = ["nodule", "effusion", "cardiomegaly"]
    y = rng.integers(0, 2, (40, 3)).astype(np.float32)
    logits = (rng.normal(size=(40, 3)) + y).astype(np.float32)
    task = ClassificationTask(
        PassThrough(3), ADAM, num_classes=3, multilabel=True, label_names=names
    )
    got = _validate(task, image=torch.tensor(logits)[:, None], label=torch.tensor(y))
    probs = 1 / (1 + np.exp(-logits))
    assert got["val/auroc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-6)
    for k, name in enumerate(names):
        assert got[f"val/auroc_{name}"] == pytest.approx(roc_auc_score(y[:, k], probs[:, k]), 1e-6)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_binary_and_multiclass_auroc_equal_sklearn(num_classes):
    rng = np.random.default_rng(6)
    y = rng.integers(0, max(num_classes, 2), 30)
    logits = rng.normal(size=(30, num_classes)).astype(np.float32)
    logits[np.arange(30), y % num_classes] += 1.0
    task = ClassificationTask(PassThrough(num_classes), ADAM, num_classes=num_classes)
    got = _validate(task, image=torch.tensor(logits)[:, None], label=torch.tensor(y).float())
    if num_classes == 1:
        expected = roc_auc_score(y, logits[:, 0])
    else:
        probs = torch.softmax(torch.tensor(logits), 1).numpy()
        expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert got["val/auroc"] == pytest.approx(expected, abs=1e-6)


def test_multilabel_needs_one_name_per_label():
    with pytest.raises(ValueError, match="label_names"):
        ClassificationTask(PassThrough(3), ADAM, num_classes=3, multilabel=True, label_names=["a"])


# --- segmentation ----------------------------------------------------------------------------


def _dice_reference(pred: np.ndarray, ref: np.ndarray, classes: int) -> list[float]:
    """Per foreground class: mean Dice over the cases whose reference contains the class."""
    out = []
    for c in range(1, classes):
        values = [
            2 * np.sum((p == c) & (r == c)) / (np.sum(p == c) + np.sum(r == c))
            for p, r in zip(pred, ref, strict=True)
            if np.any(r == c)
        ]
        out.append(float(np.mean(values)) if values else float("nan"))
    return out


def test_segmentation_dice_per_class_ignores_empty_references():
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 3, (9, 1, 8, 8))
    ref = np.where(rng.random((9, 1, 8, 8)) < 0.7, pred, rng.integers(0, 3, (9, 1, 8, 8)))
    ref[0][ref[0] == 2] = 0  # no class 2 in case 0's reference, while the prediction has some
    names = ["background", "lung", "heart"]
    task = SegmentationTask(LabelMapNet(3), ADAM, num_classes=3, label_names=names)
    got = _validate(task, image=torch.tensor(pred).float(), mask=torch.tensor(ref))
    expected = _dice_reference(pred, ref, 3)
    assert got["val/dice_lung"] == pytest.approx(expected[0], abs=1e-6)
    assert got["val/dice_heart"] == pytest.approx(expected[1], abs=1e-6)
    assert got["val/dice"] == pytest.approx(np.mean(expected), abs=1e-6)


@pytest.mark.parametrize(
    ("loss", "monai_loss"),
    [
        (None, "DiceCELoss"),
        ({"name": "dice"}, "DiceLoss"),
        ({"name": "dicefocal", "gamma": 1.5, "class_weights": [0.2, 1.0, 2.0]}, "DiceFocalLoss"),
        ({"name": "dicece", "include_background": False}, "DiceCELoss"),
    ],
)
def test_segmentation_loss_options_equal_monai(loss, monai_loss):
    import monai.losses

    rng = np.random.default_rng(8)
    logits = torch.tensor(rng.normal(size=(2, 3, 6, 6, 4)), dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 3, (2, 1, 6, 6, 4)))
    options = dict(loss or {})
    options.pop("name", None)
    options = {"weight" if k == "class_weights" else k: v for k, v in options.items()}
    if "weight" in options:
        options["weight"] = torch.tensor(options["weight"])
    reference = getattr(monai.losses, monai_loss)(to_onehot_y=True, softmax=True, **options)
    task = SegmentationTask(LabelMapNet(3), ADAM, num_classes=3, loss=loss)
    assert task.loss(logits, target).item() == pytest.approx(reference(logits, target).item())


def test_segmentation_refuses_bad_settings():
    with pytest.raises(ValueError, match="class_weights must have 3"):
        SegmentationTask(LabelMapNet(3), ADAM, num_classes=3, loss={"class_weights": [1, 2]})
    with pytest.raises(ValueError, match="keep_largest"):
        SegmentationTask(LabelMapNet(3), ADAM, num_classes=3, keep_largest=[3])
    with pytest.raises(ValueError, match="inference has unknown keys"):
        SegmentationTask(LabelMapNet(2), ADAM, inference={"roi": [8, 8]})
    with pytest.raises(ValueError, match="label_names"):
        SegmentationTask(LabelMapNet(3), ADAM, num_classes=3, label_names=["bg", "a"])


# --- regression ------------------------------------------------------------------------------


def test_regression_scales_targets_and_reports_mae_rmse_in_target_units():
    rng = np.random.default_rng(9)
    train_y = rng.normal(50.0, 12.0, 64).astype(np.float32)
    task = RegressionTask(PassThrough(1), ADAM, label_names=["lesion_volume_ml"])
    task.prepare_from_training(torch.tensor(train_y), None)
    assert task.target_mean.item() == pytest.approx(train_y.mean(), rel=1e-5)
    assert task.target_std.item() == pytest.approx(train_y.std(ddof=1), rel=1e-5)
    assert {"target_mean", "target_std"} <= set(task.state_dict())
    out = rng.normal(size=(23, 1)).astype(np.float32)
    y = rng.normal(50.0, 12.0, 23).astype(np.float32)
    got = _validate(task, image=torch.tensor(out)[:, None], label=torch.tensor(y))
    pred = out[:, 0] * train_y.std(ddof=1) + train_y.mean()
    assert got["val/mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert got["val/rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-5)
    batches = _trainer().predict(task, dataloaders=_loader(image=torch.tensor(out)[:, None]))
    predicted = torch.cat([b["pred"] for b in batches]).numpy()
    np.testing.assert_allclose(predicted, pred, rtol=1e-5)
    assert "prob" not in batches[0]


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_regression_losses_on_standardised_targets(name):
    task = RegressionTask(PassThrough(1), ADAM, loss={"name": name, "delta": 0.5})
    task.prepare_from_training(torch.tensor([10.0, 20.0, 30.0]), None)
    out, y = torch.tensor([[0.1], [-2.0], [1.3]]), torch.tensor([12.0, 25.0, 5.0])
    error = out[:, 0].numpy() - (y.numpy() - 20.0) / 10.0
    huber = np.where(np.abs(error) < 0.5, 0.5 * error**2, 0.5 * (np.abs(error) - 0.25))
    expected = {"mse": np.mean(error**2), "l1": np.mean(np.abs(error)), "huber": np.mean(huber)}
    assert task.loss(out, y).item() == pytest.approx(expected[name], rel=1e-6)


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("val/loss", "min"),
        ("val/mae", "min"),
        ("test/rmse", "min"),
        ("val/auroc", "max"),
        ("val/dice", "max"),
        ("val/auroc_maelstrom", "max"),
    ],
)
def test_monitor_mode_follows_the_metric(metric, mode):
    assert monitor_mode(metric) == mode
    assert monitor_mode(RegressionTask(PassThrough(1), ADAM).monitor) == "min"


def test_regression_refuses_too_few_targets():
    task = RegressionTask(PassThrough(1), ADAM)
    with pytest.raises(ValueError, match="at least 2 finite"):
        task.prepare_from_training(torch.tensor([1.0, float("nan")]), None)


# --- covariates and compile ------------------------------------------------------------------


class CovariateNet(nn.Module):
    """Adds the covariates' sum to one image logit and records what it was given."""

    takes_covariates = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.fitted: torch.Tensor | None = None

    def fit_covariates(self, covariates: torch.Tensor) -> None:
        self.fitted = covariates

    def forward(self, image: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
        return self.scale * image.flatten(1)[:, :1] + covariates.nansum(1, keepdim=True)


def test_covariates_reach_a_network_that_takes_them():
    task = ClassificationTask(CovariateNet(), ADAM)
    covariates = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    task.prepare_from_training(torch.tensor([0.0, 1.0]), covariates)
    assert task.net.fitted is not None and torch.equal(task.net.fitted.isnan(), covariates.isnan())
    image = torch.zeros(2, 1, 4)
    assert torch.equal(task(image, covariates)[:, 0], torch.tensor([1.0, 5.0]))
    batch = {"image": image, "covariates": covariates, "label": torch.tensor([0.0, 1.0])}
    batch["case_id"] = ["a", "b"]
    assert torch.allclose(
        task.predict_step(batch, 0)["prob"], torch.sigmoid(torch.tensor([1, 5.0]))
    )
    with pytest.raises(ValueError, match="data.covariates"):
        task(image)
    # A network without covariates ignores the batch's covariates.
    plain = ClassificationTask(PassThrough(1), ADAM)
    assert torch.equal(plain(image + 2, covariates), plain(image + 2))


def test_compile_keeps_state_dict_keys_and_outputs(monkeypatch):
    # Inductor needs ~20 s of C++ compilation on this CPU; the eager backend still goes through
    # torch.compile's wrapper, which is what could leak "_orig_mod" keys into checkpoints.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="eager"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    plain = SegmentationTask(net, ADAM)
    compiled = SegmentationTask(net, ADAM, compile=True)
    image = torch.rand(1, 1, 8, 8)
    assert torch.allclose(compiled(image), plain(image))
    assert isinstance(compiled._compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    SegmentationTask(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)), ADAM).load_state_dict(
        compiled.state_dict()
    )


# --- DDP -------------------------------------------------------------------------------------

DDP_SCRIPT = """
import json, sys
from functools import partial
import lightning as L, numpy as np, torch
from torch.utils.data import DataLoader
sys.path.insert(0, sys.argv[2])
from test_tasks import LabelMapNet, PassThrough
from medimg.tasks import ClassificationTask, RegressionTask, SegmentationTask
from medimg.tasks.base import monitor_mode

rng = np.random.default_rng(0)
y = rng.integers(0, 2, (24, 3)).astype(np.float32)
logits = (rng.normal(size=(24, 3)) + y).astype(np.float32)
pred = rng.integers(0, 3, (24, 1, 6, 6))
ref = np.where(rng.random((24, 1, 6, 6)) < 0.6, pred, rng.integers(0, 3, (24, 1, 6, 6)))
target = rng.normal(5.0, 2.0, 24).astype(np.float32)

def rows(**cols):
    return [{k: torch.tensor(v[i]) for k, v in cols.items()} | {"case_id": str(i)} for i in range(24)]

adam = partial(torch.optim.Adam, lr=1e-3)
trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False,
                    enable_progress_bar=False, enable_model_summary=False)
cls = ClassificationTask(PassThrough(3), adam, num_classes=3, multilabel=True,
                         label_names=["a", "b", "c"])
out = trainer.validate(cls, DataLoader(rows(image=logits[:, None], label=y), batch_size=4),
                       verbose=False)[0]
seg = SegmentationTask(LabelMapNet(3), adam, num_classes=3, label_names=["bg", "x", "z"])
out |= trainer.validate(seg, DataLoader(rows(image=pred.astype(np.float32), mask=ref),
                        batch_size=4), verbose=False)[0]
reg = RegressionTask(PassThrough(1), adam)
reg.prepare_from_training(torch.tensor([0.0, 2.0]), None)
out |= trainer.validate(reg, DataLoader(rows(image=logits[:, None, :1], label=target),
                        batch_size=4), verbose=False)[0]
if trainer.global_rank == 0:
    json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.slow  # two processes start torch and MONAI: ~20 s idle, more under load
def test_stage_metrics_under_ddp_equal_the_whole_set(tmp_path):
    """Two gloo processes each see half the cases; the logged metrics are the whole set's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_metrics.py"
    script.write_text(DDP_SCRIPT)
    out_file = tmp_path / "out.json"
    tests_dir = str(Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, str(script), str(out_file), tests_dir],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(out_file.read_text())
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (24, 3)).astype(np.float32)
    logits = (rng.normal(size=(24, 3)) + y).astype(np.float32)
    pred = rng.integers(0, 3, (24, 1, 6, 6))
    ref = np.where(rng.random((24, 1, 6, 6)) < 0.6, pred, rng.integers(0, 3, (24, 1, 6, 6)))
    target = rng.normal(5.0, 2.0, 24).astype(np.float32)
    probs = 1 / (1 + np.exp(-logits))
    assert got["val/auroc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-6)
    assert got["val/auroc_b"] == pytest.approx(roc_auc_score(y[:, 1], probs[:, 1]), abs=1e-6)
    dice = _dice_reference(pred, ref, 3)
    assert got["val/dice_x"] == pytest.approx(dice[0], abs=1e-6)
    assert got["val/dice"] == pytest.approx(np.mean(dice), abs=1e-6)
    std = np.std([0.0, 2.0], ddof=1)
    regressed = logits[:, 0] * std + 1.0
    assert got["val/mae"] == pytest.approx(mean_absolute_error(target, regressed), rel=1e-5)
    assert got["val/rmse"] == pytest.approx(
        np.sqrt(mean_squared_error(target, regressed)), rel=1e-5
    )
