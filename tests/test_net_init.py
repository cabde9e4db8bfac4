"""Initialising networks from weight files and freezing all but the head, on real MONAI classes."""

from __future__ import annotations

import pickle
from functools import partial

import pytest
import torch
from monai.networks.nets import DenseNet, DenseNet121, EfficientNetBN, SEResNet50, UNet, resnet18
from torch import nn

from medimg.nets import (
    FusionNet,
    apply_init,
    default_head,
    freeze_encoder,
    hold_frozen_norms,
    load_weights,
)
from medimg.tasks import ClassificationTask


def _small_densenet(out_channels: int = 2) -> DenseNet:
    return DenseNet(2, 1, out_channels, init_features=8, growth_rate=4, block_config=(2, 2))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_plain_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    source, target = _small_densenet(), _small_densenet()
    assert not _same(source, target)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    report = load_weights(target, tmp_path / "w.pt")
    assert _same(source, target) and report == ([], [], [])


def test_lightning_checkpoint_net_keys_are_used(tmp_path):
    source, target = _small_densenet(), _small_densenet()
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    state["criterion.pos_weight"] = torch.ones(1)  # task entries that are not the network's
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "best.ckpt")
    load_weights(target, tmp_path / "best.ckpt")
    assert _same(source, target)


def test_a_pretrained_image_network_initialises_a_fusion_net(tmp_path):
    image_net = _small_densenet(8)
    torch.save(image_net.state_dict(), tmp_path / "encoder.pt")
    fusion = FusionNet(_small_densenet(8), 2, 1, 8)
    load_weights(fusion, tmp_path / "encoder.pt")
    assert _same(image_net, fusion.image_net)


def test_shape_mismatch_is_refused_with_the_file_and_key(tmp_path):
    torch.save(_small_densenet(3).state_dict(), tmp_path / "three_classes.pt")
    target = _small_densenet(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"three_classes\.pt.*shape mismatches.*class_layers\.out"):
        load_weights(target, tmp_path / "three_classes.pt")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    # Non-strict: everything but the mismatched head is loaded, and reported.
    report = load_weights(target, tmp_path / "three_classes.pt", strict=False)
    assert [m.split(":")[0] for m in report.mismatched] == [
        "class_layers.out.weight",
        "class_layers.out.bias",
    ]
    assert torch.equal(target.class_layers.out.bias, before["class_layers.out.bias"])


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _small_densenet().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["features.conv0.weight"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"missing keys \(1\).*conv0.*unexpected keys \(1\)"):
        load_weights(_small_densenet(), tmp_path / "w.pt")


class Arbitrary:
    """Any object: unpickling it would run code, which weights_only refuses."""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint at all", "weights_only=True"),
        (pickle.dumps(Arbitrary()), "weights_only=True"),
        (None, "holds no state_dict"),
        ({"a": 1}, "non-tensor"),
    ],
    ids=["garbage", "arbitrary-pickle", "a-list", "non-tensor"],
)
def test_bad_weight_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save([] if content is None else content, path)
    with pytest.raises(ValueError, match=message) as err:
        load_weights(_small_densenet(), path)
    assert "bad.pt" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_weights(_small_densenet(), tmp_path / "nowhere.pt")


def _trainable(net: nn.Module) -> set[str]:
    return {n for n, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("build", "head"),
    [
        (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=3), "class_layers"),
        (lambda: resnet18(spatial_dims=2, n_input_channels=1, num_classes=3), "fc"),
    ],
)
def test_freeze_encoder_leaves_only_the_head_trainable(build, head):
    net = build()
    trainable = freeze_encoder(net)
    expected = {n for n, _ in net.get_submodule(head).named_parameters(prefix=head)}
    assert expected and _trainable(net) == expected == set(trainable)
    assert len(_trainable(net)) < len(list(net.parameters()))


def test_default_heads_exist_on_the_real_monai_classes():
    nets = [
        EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1, num_classes=2
        ),
        SEResNet50(spatial_dims=2, in_channels=1, num_classes=2),
    ]
    for net in nets:
        (head,) = default_head(net)
        assert isinstance(net.get_submodule(head), nn.Linear)


def test_fusion_net_freezes_the_image_encoder_but_not_the_heads():
    net = FusionNet(_small_densenet(8), 2, 1, 8)
    freeze_encoder(net)
    assert {n.split(".")[0] for n in _trainable(net)} == {"head", "image_net"}
    assert all(n.startswith(("head.", "image_net.class_layers.")) for n in _trainable(net))
    assert not any(p.requires_grad for p in net.image_net.features.parameters())


def _norm_statistics(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if k.endswith("running_mean")}


@pytest.mark.parametrize("frozen", [True, False])
def test_a_training_task_keeps_the_frozen_encoders_norm_statistics(frozen):
    torch.manual_seed(0)
    net = _small_densenet()
    if frozen:
        freeze_encoder(net)
    task = ClassificationTask(net, optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=2)
    before = _norm_statistics(net)
    task.train()
    assert task.training and net.class_layers.training
    net(torch.randn(4, 1, 16, 16) * 5 + 3)  # a batch far from the stored statistics
    after = _norm_statistics(net)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # Frozen: every norm layer sits in the encoder (DenseNet's head is one Linear) and keeps its
    # statistics; trainable: they all move. Eval mode is restored by train() after validation.
    assert changed == ([] if frozen else list(before))
    assert hold_frozen_norms(net) == (len(before) if frozen else 0)
    task.eval()
    assert not any(m.training for m in net.modules())


def test_unknown_class_or_head_is_refused():
    unet = UNet(2, 1, 2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="no default head for UNet"):
        freeze_encoder(unet)
    with pytest.raises(ValueError, match="not modules of DenseNet"):
        freeze_encoder(_small_densenet(), head=["classifier"])


def test_apply_init_loads_then_freezes(tmp_path):
    source = _small_densenet()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    net = apply_init(_small_densenet(), weights=str(tmp_path / "w.pt"), freeze_encoder=True)
    assert _same(source, net)
    assert _trainable(net) == {"class_layers.out.weight", "class_layers.out.bias"}
    custom = apply_init(_small_densenet(), freeze_encoder=True, head=["features.denseblock2"])
    assert all(n.startswith("features.denseblock2.") for n in _trainable(custom))
    with pytest.raises(ValueError, match="freeze_encoder"):
        apply_init(_small_densenet(), head=["class_layers"])
