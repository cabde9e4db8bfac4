"""FusionNet: covariate scaling against NumPy, missing values, use of covariates, TorchScript."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet
from torch.utils.data import DataLoader

from medimg.nets import FusionNet
from medimg.tasks import ClassificationTask

NAN = float("nan")


def _densenet(out_channels: int) -> DenseNet:
    """A small MONAI DenseNet (DenseNet121's class with fewer layers, to keep the test fast)."""
    return DenseNet(2, 1, out_channels, init_features=8, growth_rate=4, block_config=(2, 2))


def _fusion(n_covariates: int = 3, out_channels: int = 1) -> FusionNet:
    torch.manual_seed(0)
    return FusionNet(_densenet(8), n_covariates, out_channels, image_features=8).eval()


def test_fit_covariates_matches_numpy_nan_statistics():
    train = np.array([[60, 1, 5.0], [70, 0, NAN], [NAN, 1, 9.0], [45, 0, 30.0]])
    net = _fusion()
    net.fit_covariates(torch.tensor(train))
    np.testing.assert_allclose(net.cov_mean.numpy(), np.nanmean(train, 0), rtol=1e-6)
    np.testing.assert_allclose(net.cov_std.numpy(), np.nanstd(train, 0, ddof=1), rtol=1e-6)
    assert {"cov_mean", "cov_std"} <= set(net.state_dict())


def test_fit_covariates_keeps_unit_scale_for_empty_or_constant_columns():
    net = _fusion(2)
    net.fit_covariates(torch.tensor([[NAN, 4.0], [NAN, 4.0]]))
    assert net.cov_mean.tolist() == [0.0, 4.0] and net.cov_std.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        net.fit_covariates(torch.zeros(4, 3))


def test_missing_values_give_finite_outputs_and_an_indicator():
    net = _fusion()
    net.fit_covariates(torch.tensor([[60, 1, 5.0], [70, 0, 8.0], [50, 1, 9.0]]))
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = net(image, torch.tensor([[NAN, NAN, NAN], [65, 1, NAN]]))
        at_mean = net(image, torch.tensor([[60, 2 / 3, 22 / 3]] * 2))
        missing_at_mean = net(image, torch.tensor([[NAN, 2 / 3, 22 / 3]] * 2))
    assert torch.isfinite(out).all()
    # A missing value is scaled like the training mean but still told apart by its indicator.
    assert not torch.allclose(at_mean, missing_at_mean)


def test_output_changes_with_a_covariate():
    net = _fusion()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        young = net(image, torch.tensor([[40.0, 1, 5]]))
        old = net(image, torch.tensor([[80.0, 1, 5]]))
    assert (young - old).abs().item() > 1e-6


def test_covariate_dropout_hides_whole_cases_in_training_only():
    torch.manual_seed(0)
    net = FusionNet(_densenet(8), 3, 1, image_features=8, covariate_dropout=0.5)
    net.fit_covariates(torch.tensor([[60, 1, 5.0], [70, 0, 8.0], [50, 1, 9.0]]))
    image = torch.rand(1, 1, 32, 32).expand(400, -1, -1, -1)
    covariates = torch.tensor([[75.0, 0, 12.0]]).expand(400, -1)
    net.eval()
    with torch.no_grad():
        present = net(image[:1], covariates[:1])
        hidden = net(image[:1], torch.full((1, 3), NAN))
        assert torch.equal(net(image, covariates), present.expand(400, -1))
        net.train()
        net.image_net.eval()  # batch norm in eval: rows differ only by the covariates' fate
        out = net(image, covariates)
    is_hidden = torch.isclose(out, hidden, atol=1e-6).all(1)
    is_present = torch.isclose(out, present, atol=1e-6).all(1)
    assert bool((is_hidden ^ is_present).all())  # each case: all covariates kept or all hidden
    assert 0.4 < is_hidden.float().mean().item() < 0.6  # binomial(400, 0.5): sd 0.025
    with pytest.raises(ValueError, match="covariate_dropout"):
        FusionNet(_densenet(8), 3, 1, image_features=8, covariate_dropout=1.0)


def test_the_head_learns_at_its_own_rate():
    net = FusionNet(_densenet(8), 3, 1, image_features=8, head_lr_scale=10.0)
    task = ClassificationTask(
        net,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4),
        num_classes=1,
    )
    configured = task.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    image, head = optimizer.param_groups
    assert {id(p) for p in image["params"]} == {id(p) for p in net.image_net.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in net.head.parameters()}
    assert (image["lr"], head["lr"]) == pytest.approx((1e-3, 1e-2))
    optimizer.step()
    scheduler.step()  # the schedule scales both groups from their own starting rates
    assert head["lr"] / image["lr"] == pytest.approx(10.0)
    assert head["lr"] < 1e-2
    with pytest.raises(ValueError, match="head_lr_scale"):
        FusionNet(_densenet(8), 3, 1, image_features=8, head_lr_scale=0)


def test_fusion_scripts_and_traces_with_eager_outputs():
    net = _fusion()
    net.fit_covariates(torch.tensor([[60, 1, 5.0], [70, 0, NAN], [50, 1, 9.0]]))
    image, covariates = torch.rand(2, 1, 32, 32), torch.tensor([[61, 0, NAN], [NAN, 1, 7.0]])
    scripted = torch.jit.script(net)
    traced = torch.jit.trace(net, (image, covariates))
    with torch.no_grad():
        eager = net(image, covariates)
        assert torch.allclose(scripted(image, covariates), eager, atol=1e-6)
        assert torch.allclose(traced(image, covariates), eager, atol=1e-6)
    assert scripted.takes_covariates
    with pytest.raises(Exception, match="n_covariates"):
        scripted(image, covariates[:, :2])


def test_fusion_refuses_a_wrong_image_feature_size():
    net = FusionNet(_densenet(4), 2, 1, 8).eval()
    with pytest.raises(ValueError, match="image_features"):
        net(torch.rand(1, 1, 32, 32), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="n_covariates"):
        FusionNet(net.image_net, 0, 1, 4)


def test_classification_task_trains_a_fusion_net_on_covariate_batches():
    net = _fusion().train()
    task = ClassificationTask(net, partial(torch.optim.Adam, lr=1e-3))
    covariates = torch.tensor([[60, 1, 5.0], [70, 0, NAN], [NAN, 1, 9.0], [45, 0, 30.0]])
    task.prepare_from_training(torch.tensor([0.0, 1, 0, 1]), covariates)
    assert torch.allclose(net.cov_mean, torch.tensor([175 / 3, 0.5, 44 / 3]))
    rows = [
        {"image": torch.rand(1, 32, 32), "covariates": c, "label": float(i % 2), "case_id": str(i)}
        for i, c in enumerate(covariates)
    ]
    before = net.head[0].weight.clone()
    trainer = L.Trainer(
        accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False
    )
    trainer.fit(task, DataLoader(rows, batch_size=4), DataLoader(rows, batch_size=4))
    assert not torch.equal(before, net.head[0].weight)
