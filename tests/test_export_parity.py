"""Exported models reproduce the framework's evaluation on raw inputs, in a torch-only process."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.ndimage import map_coordinates

from medimg.data.datamodule import ManifestDataModule
from medimg.data.loading import load_transform, raw_volume
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import VolumePreprocessor
from medimg.export import load_model
from medimg.export.tiny import TINY_PREPROCESS, tiny_model
from medimg.pipeline.export import ExportError, export_run

KINDS = {
    "segmentation": ("medimg.tasks.SegmentationTask", 2, ["background", "lesion"]),
    "classification": ("medimg.tasks.ClassificationTask", 1, ["no_lesion", "lesion"]),
}


def _threshold_net() -> torch.nn.Module:
    """Lesion wherever the windowed intensity exceeds 0.6 (about 100 HU): real, non-empty masks."""
    net = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.0, 20.0]).reshape(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.0, -12.0]))
    return net


def _config(kind: str, fmt: str = "torchscript"):
    target, num_classes, labels = KINDS[kind]
    return OmegaConf.create(
        {
            "experiment_name": f"parity-{kind}",
            "task": {"_target_": target, "num_classes": num_classes, "label_names": labels},
            "net": {"_target_": "torch.nn.Conv3d"},
            "preprocess": {
                "spacing": list(TINY_PREPROCESS.spacing),
                "size": list(TINY_PREPROCESS.size),
                "window": list(TINY_PREPROCESS.window),
                "fill_value": TINY_PREPROCESS.fill_value,
            },
            "export": {"parity_atol": 1e-4, "parity_min_dice": 0.99, "format": fmt},
        }
    )


def _setup(kind: str, manifests, net: torch.nn.Module):
    """A datamodule whose test split is 4 internal cases, a task around ``net``, predictions."""
    import lightning as L
    from hydra.utils import get_class

    frame = load_manifest(manifests["internal"], kind).head(4).assign(split="test")
    datamodule = ManifestDataModule(
        frame, None, task=kind, preprocessor=VolumePreprocessor(TINY_PREPROCESS), batch_size=2
    )
    target, num_classes, labels = KINDS[kind]
    task = get_class(target)(
        net=net,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=num_classes,
        label_names=labels,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    outputs = trainer.predict(task, dataloaders=datamodule.loader("test"))
    return datamodule, task, outputs


@pytest.fixture(scope="module")
def segmentation(manifests, tmp_path_factory):
    datamodule, task, outputs = _setup("segmentation", manifests, _threshold_net())
    run_dir = tmp_path_factory.mktemp("seg_run")
    path = export_run(_config("segmentation"), task, datamodule, outputs, {}, {}, run_dir)
    return datamodule, outputs, path


def _scipy_to_input_grid(probs: np.ndarray, grid_affine: np.ndarray, shape, affine) -> np.ndarray:
    """Independent reference: trilinear resampling of (C, ...) probabilities with scipy.

    Padding by one background voxel reproduces grid_sample's blend with the fill at the edge.
    """
    to_model = np.linalg.inv(grid_affine) @ affine
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    coords = to_model[:3, :3] @ index + to_model[:3, 3:] + 1.0
    out = [
        map_coordinates(np.pad(p, 1, constant_values=float(c == 0)), coords, order=1)
        for c, p in enumerate(probs)
    ]
    return np.stack(out).reshape(len(probs), *shape)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_segmentation_export_maps_the_mask_back_onto_the_input_grid(segmentation, manifests):
    datamodule, outputs, path = segmentation
    card = json.loads(path.with_name("model_card.json").read_text())
    parity = card["parity"]
    assert parity["passed"] and parity["n_cases"] == 4 and parity["framework_modules_loaded"] == []
    assert parity["max_abs_diff"] <= 1e-4 and parity["min_dice"] >= 0.99
    model = load_model(path)
    reader = load_transform(with_mask=False)
    framework = [p for batch in outputs for p in batch["prob"]]
    pre = VolumePreprocessor(TINY_PREPROCESS)
    for record, probs in zip(datamodule.records("test"), framework, strict=True):
        volume, affine = raw_volume(reader({"image": record["image"]})["image"])
        got = model(volume, affine)
        assert got.shape == (2, *volume.shape)  # the input's own voxel grid
        grid = pre.grid_affine(affine, list(volume.shape)).numpy()
        reference = _scipy_to_input_grid(probs.numpy(), grid, volume.shape, affine.numpy())
        assert np.abs(got.numpy() - reference).max() <= 1e-4
        mask, ref_mask = got.argmax(0).numpy() == 1, reference.argmax(0) == 1
        assert 0.001 < mask.mean() < 0.5  # the threshold net finds real structures
        assert _dice(mask, ref_mask) >= 0.99


def test_to_input_grid_matches_scipy_on_an_oblique_flipped_input():
    model = tiny_model("segmentation")
    volume = torch.randn(30, 27, 14) * 300
    c, s = np.cos(0.3), np.sin(0.3)
    affine = torch.tensor(
        [[0.0, -3.0 * c, 4.0 * s, 10.0], [2.5, 0.0, 0.0, -5.0], [0.0, 3.0 * s, 4.0 * c, 3.0]]
        + [[0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    with torch.no_grad():
        probs = model.model_grid_probs(volume, affine)
        got = model(volume, affine).numpy()
    grid = model.grid_affine(volume, affine).numpy()
    reference = _scipy_to_input_grid(probs.numpy(), grid, volume.shape, affine.numpy())
    assert np.abs(got - reference).max() <= 1e-5
    assert np.allclose(got.sum(0), 1.0, atol=1e-5)


def test_export_refuses_a_model_that_does_not_reproduce_the_framework(
    segmentation, tmp_path, manifests
):
    datamodule, outputs, _ = segmentation
    shifted = [{**b, "prob": torch.roll(b["prob"], shifts=2, dims=2)} for b in outputs]
    task = _setup("segmentation", manifests, _threshold_net())[1]
    with pytest.raises(ExportError, match="differs from the checkpoint"):
        export_run(_config("segmentation"), task, datamodule, shifted, {}, {}, tmp_path)
    assert not (tmp_path / "export" / "model.ts").exists()
    assert (
        json.loads((tmp_path / "export" / "model_card.json").read_text())["parity"]["passed"]
        is False
    )


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_classification_export_parity_in_every_format(manifests, tmp_path, fmt):
    datamodule, task, outputs = _setup(
        "classification", manifests, tiny_model("classification").net.net
    )
    metrics = {"test": {"auroc": 0.5, "auroc_ci": [0.2, 0.8]}, "site_b": {"auroc": 0.6}}
    path = export_run(
        _config("classification", fmt), task, datamodule, outputs, metrics, {}, tmp_path
    )
    card = load_model(path).card
    assert card["parity"]["passed"] and card["parity"]["max_abs_diff"] <= 1e-4
    assert card["parity"]["n_cases"] == 4 and card["export"]["format"] == fmt
    assert card["validation"]["internal"]["test"]["auroc_ci"] == [0.2, 0.8]
    assert card["validation"]["external"] == {"site_b": {"auroc": 0.6}}
    assert card["labels"][1]["code"] == {"scheme": "SCT", "value": "52988006", "meaning": "Lesion"}
    if fmt != "torchscript":
        assert card["export"]["input_shape"] == [64, 64, 40] and card["export"]["gaps"]


@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_segmentation_parity_in_the_traced_formats(manifests, tmp_path, fmt):
    datamodule, task, outputs = _setup("segmentation", manifests, _threshold_net())
    path = export_run(_config("segmentation", fmt), task, datamodule, outputs, {}, {}, tmp_path)
    card = load_model(path).card
    assert card["parity"]["passed"] and card["parity"]["min_dice"] >= 0.99
    assert card["parity"]["n_cases"] == 4 and path.suffix == {"torch_export": ".pt2"}.get(
        fmt, ".onnx"
    )
