"""Segmentation inference: sliding window equal to MONAI's, flip TTA, largest-component filter."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn
from torch.utils.data import DataLoader

from medimg.tasks import SegmentationTask

ADAM = partial(torch.optim.Adam, lr=1e-3)


def _unet(dims: int, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return UNet(dims, 1, classes, channels=(4, 8), strides=(2,), num_res_units=0).eval()


@pytest.mark.parametrize(
    ("shape", "roi"), [((2, 1, 40, 36), (16, 16)), ((1, 1, 20, 24, 18), (12, 12, 8))]
)
def test_task_sliding_window_equals_monai(shape, roi):
    net = _unet(len(roi))
    settings = {"roi_size": list(roi), "sw_batch_size": 3, "overlap": 0.25, "mode": "gaussian"}
    task = SegmentationTask(net, ADAM, num_classes=3, inference=settings).eval()
    image = torch.rand(shape)
    with torch.no_grad():
        got = task.infer(image)
        expected = sliding_window_inference(
            image, roi, 3, net, overlap=0.25, mode="gaussian", sigma_scale=0.125
        )
        plain = net(image)
    assert got.shape == expected.shape == plain.shape
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - plain).abs().max().item() > 1e-3  # tiling does change a UNet's border output
    batch = {"image": image, "case_id": [f"c{i}" for i in range(shape[0])]}
    with torch.no_grad():
        prob = task.predict_step(batch, 0)["prob"]
    assert torch.allclose(prob, torch.softmax(expected, 1), atol=1e-6)


class RoiOnly(nn.Module):
    """A 1×1 convolution that refuses any input but a 16×16 window."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[2:]) != (16, 16):
            raise RuntimeError(f"got a {tuple(image.shape[2:])} input")
        return self.conv(image)


def test_validation_and_test_run_through_the_sliding_window():
    task = SegmentationTask(RoiOnly(), ADAM, inference={"roi_size": [16, 16]})
    rows = [
        {
            "image": torch.rand(1, 40, 24),
            "mask": (torch.rand(1, 40, 24) > 0.5).long(),
            "case_id": "a",
        }
    ]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    got = trainer.validate(task, dataloaders=DataLoader(rows, batch_size=1), verbose=False)[0]
    assert "val/dice" in got and "val/loss" in got
    trainer.test(task, dataloaders=DataLoader(rows, batch_size=1), verbose=False)


def test_roi_size_must_match_the_image_dimensions():
    task = SegmentationTask(_unet(2), ADAM, num_classes=3, inference={"roi_size": [8, 8, 8]})
    with pytest.raises(ValueError, match="roi_size"):
        task.infer(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_tta_is_undone_for_a_flip_equivariant_network(dims):
    # A pointwise network commutes with flips: TTA must then give back the plain softmax,
    # which fails if any flipped prediction is not flipped back before averaging.
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 3, 1)
    task = SegmentationTask(conv, ADAM, num_classes=3, tta_flips=True)
    image = torch.rand((2, 1, 9, 7, 5)[: dims + 2])
    with torch.no_grad():
        got = task.activate(task.infer(image))
        plain = torch.softmax(conv(image), 1)
    assert torch.allclose(got, plain, atol=1e-6)


def test_flip_tta_averages_each_axis_flip():
    net = _unet(3, classes=2)
    task = SegmentationTask(net, ADAM, tta_flips=True, inference={"roi_size": [8, 8, 8]})
    image = torch.rand(1, 1, 12, 10, 8)
    window = partial(
        sliding_window_inference,
        roi_size=(8, 8, 8),
        sw_batch_size=1,
        predictor=net,
        mode="gaussian",
    )
    with torch.no_grad():
        got = task.activate(task.infer(image))
        views = [torch.softmax(window(image), 1)]
        views += [torch.softmax(window(image.flip(a)), 1).flip(a) for a in (2, 3, 4)]
    assert torch.allclose(got, torch.stack(views).mean(0), atol=1e-5)
    assert not torch.allclose(got, views[0], atol=1e-3)


class FixedLabelMap(nn.Module):
    """Returns confident logits of a fixed label map, whatever the image."""

    def __init__(self, label_map: torch.Tensor, classes: int) -> None:
        super().__init__()
        hot = nn.functional.one_hot(label_map.long(), classes).movedim(-1, 0).float()
        self.register_buffer("logits", 10.0 * hot)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(image.shape[0], *self.logits.shape) + 0 * image.sum()


@pytest.mark.parametrize("dims", [2, 3])
def test_keep_largest_removes_a_small_far_component(dims):
    shape = (16,) * dims
    reference = np.zeros(shape, dtype=np.int64)
    reference[(slice(2, 8),) * dims] = 1
    reference[(slice(9, 12),) * dims] = 2
    predicted = reference.copy()
    predicted[(slice(14, 15),) * dims] = 1  # a one-voxel false positive, far from the lesion
    predicted[(slice(0, 1),) * dims] = 2  # and one of class 2
    net = FixedLabelMap(torch.tensor(predicted), 3)
    names = ["background", "liver", "lesion"]
    image = torch.rand(1, 1, *shape)
    rows = [{"image": image[0], "mask": torch.tensor(reference)[None], "case_id": "a"}]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)

    def run(keep_largest) -> tuple[dict, dict]:
        task = SegmentationTask(
            net, ADAM, num_classes=3, label_names=names, keep_largest=keep_largest
        )
        metrics = trainer.validate(task, DataLoader(rows, batch_size=1), verbose=False)[0]
        return metrics, trainer.predict(task, DataLoader(rows, batch_size=1))[0]

    metrics, out = run(False)
    assert metrics["val/dice_liver"] < 1 and metrics["val/dice_lesion"] < 1
    assert "pred_mask" not in out
    metrics, out = run([2])
    assert metrics["val/dice_liver"] < 1 and metrics["val/dice_lesion"] == pytest.approx(1.0)
    metrics, out = run(True)
    assert metrics["val/dice"] == pytest.approx(1.0)
    assert out["pred_mask"].shape == (1, 1, *shape) and out["pred_mask"].dtype == torch.int64
    assert np.array_equal(out["pred_mask"][0, 0].numpy(), reference)
    assert torch.allclose(out["prob"], torch.softmax(net.logits, 0)[None])
