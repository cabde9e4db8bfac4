"""The exported unit reproduces the task's own inference: sliding windows, flip TTA, covariates,
multi-label and regression outputs — in eager mode and scripted."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from monai.networks.nets import DenseNet, UNet

from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.export import export_model, load_model
from medimg.export.predictor import diagnostic_from_task
from medimg.export.tiny import tiny_card
from medimg.nets import FusionNet
from medimg.tasks import ClassificationTask, SegmentationTask

PRE = VolumePreprocessor(PreprocessConfig(spacing=(4.0, 4.0, 4.0), size=(24, 20, 14)))
SGD = partial(torch.optim.SGD, lr=0.1)
AFFINE = torch.diag(torch.tensor([-3.0, -3.0, 4.0, 1.0], dtype=torch.float64))


def _volume(seed: int = 0) -> torch.Tensor:
    return torch.randn(30, 27, 14, generator=torch.Generator().manual_seed(seed)) * 200


@pytest.mark.parametrize(
    ("inference", "tta"),
    [
        (None, True),
        ({"roi_size": [16, 16, 16], "overlap": 0.25, "mode": "gaussian"}, False),
        ({"roi_size": [12, 16, 8], "overlap": 0.5, "mode": "constant"}, True),
    ],
)
def test_tiled_and_flip_averaged_segmentation_equals_the_task(inference, tta):
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    task = SegmentationTask(net=net, optimizer=SGD, inference=inference, tta_flips=tta).eval()
    model, gaps = diagnostic_from_task(task, PRE)
    scripted = torch.jit.script(model)
    volume = _volume()
    with torch.no_grad():
        reference = task.activate(task.infer(PRE(volume, AFFINE).unsqueeze(0)))[0]
        eager = model.model_grid_probs(volume, AFFINE)
        script = scripted.model_grid_probs(volume, AFFINE)
    assert torch.allclose(eager, reference, atol=1e-6)
    assert torch.allclose(script, reference, atol=1e-6)
    assert gaps == []


def test_keep_largest_is_reported_as_a_gap():
    net = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    task = SegmentationTask(net=net, optimizer=SGD, keep_largest=True)
    assert "connected" in diagnostic_from_task(task, PRE)[1][0]


def test_covariate_model_takes_covariates_and_refuses_without(tmp_path):
    torch.manual_seed(0)
    image_net = DenseNet(3, 1, 8, init_features=4, growth_rate=4, block_config=(2,))
    net = FusionNet(image_net, n_covariates=3, out_channels=1, image_features=8)
    net.fit_covariates(torch.tensor([[50.0, 1.0, 3.0], [70.0, 0.0, float("nan")]]))
    task = ClassificationTask(net=net, optimizer=SGD).eval()
    model, _ = diagnostic_from_task(task, PRE)
    covariates = torch.tensor([61.0, float("nan"), 2.0])
    volume = _volume(1)
    with torch.no_grad():
        image = PRE(volume, AFFINE).unsqueeze(0)
        reference = task.activate(task.infer(image, covariates[None]))
    card = tiny_card(model) | {"input": {"covariates": ["age", "smoker", "grade"]}}
    path, _ = export_model(model, tmp_path / "model.ts", card)
    loaded = load_model(path)
    assert torch.allclose(loaded(volume, AFFINE, covariates), reference, atol=1e-6)
    with pytest.raises(ValueError, match="needs the covariates"):
        loaded(volume, AFFINE)


def test_multilabel_is_sigmoid_per_label():
    torch.manual_seed(0)
    net = DenseNet(3, 1, 3, init_features=4, growth_rate=4, block_config=(2,))
    task = ClassificationTask(net=net, optimizer=SGD, num_classes=3, multilabel=True).eval()
    model, _ = diagnostic_from_task(task, PRE)
    volume = _volume(2)
    with torch.no_grad():
        reference = task.activate(task.infer(PRE(volume, AFFINE).unsqueeze(0)))[0]
        got = torch.jit.script(model)(volume, AFFINE)
    assert got.shape == (3,) and torch.allclose(got, reference, atol=1e-6)
    assert not torch.allclose(got.sum(), torch.tensor(1.0))  # not a softmax
