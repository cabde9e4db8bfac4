"""Every network config builds in 2D and 3D (from len(preprocess.size)) with the task outputs."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.resolvers import register_resolvers
from medimg.pipeline.schema import register_schemas
from tests.conftest import ROOT

# Three outputs: no MONAI default (2, 400, 1000) matches, so a wrong argument name fails.
NUM_CLASSES = 3
CLASSIFIERS = (
    "densenet121 densenet169 resnet10 resnet18 resnet34 resnet50 efficientnet_b0 seresnet50 vit cnn resnet_small"
).split()
SEGMENTERS = "unet basicunet attentionunet dynunet segresnet unetr swinunetr".split()
# The smallest side each network accepts (SwinUNETR: divisible by 32 and its deepest norm needs
# more than one voxel); everything else runs on 32.
SIDE = {"swinunetr": 64}
FUSION = ("fusion", "fusion_resnet10")


@cache
def _composed(net: str) -> DictConfig:
    """The train config with ``net`` and its task, composed once per network."""
    register_schemas()
    register_resolvers()
    task = "segmentation" if net in SEGMENTERS else "classification"
    overrides = [f"net={net}", f"task={task}", f"task.num_classes={NUM_CLASSES}"]
    overrides += ["paths.root_dir=/tmp", "paths.output_dir=/tmp/x"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _cases():
    for net in CLASSIFIERS + SEGMENTERS:
        for dims in (2, 3):
            yield pytest.param(net, dims, id=f"{net}-{dims}d")


def test_the_table_covers_every_monai_network_config():
    """A new config under configs/net/ must be added to this test's table."""
    others = set(FUSION)  # covariate fusion: needs data.covariates, tested below
    names = {p.stem for p in (ROOT / "configs" / "net").glob("*.yaml")} - others
    assert names == set(CLASSIFIERS + SEGMENTERS)


@pytest.mark.parametrize("net, dims", list(_cases()))
def test_network_config_builds_for_the_preprocessing_dimension(net, dims):
    cfg = copy.deepcopy(_composed(net))
    size = [SIDE.get(net, 32)] * dims
    cfg.preprocess.size = size  # ${len:${preprocess.size}} and img_size follow it
    if "in_shape" in cfg.net:  # MONAI's Classifier takes (C, *spatial)
        assert len(cfg.net.in_shape) - 1 == dims
    else:
        assert cfg.net.get("spatial_dims", cfg.net.get("net", {}).get("spatial_dims")) == dims
    model = instantiate(cfg.net).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, *size))
    expected = (1, NUM_CLASSES, *size) if net in SEGMENTERS else (1, NUM_CLASSES)
    assert tuple(out.shape) == expected


@pytest.mark.parametrize("net", CLASSIFIERS + SEGMENTERS)
def test_no_network_config_downloads_weights(net):
    node = _composed(net).net
    node = node.get("net", node)  # wrapped networks (ViT) carry the MONAI config inside
    assert node.get("pretrained", False) is False


@pytest.mark.parametrize("net", FUSION)
@pytest.mark.parametrize("dims", (2, 3))
def test_fusion_network_configs_take_image_and_covariates(net, dims):
    register_schemas()
    register_resolvers()
    overrides = [f"net={net}", "data.covariates=[age,sex,crp]", "task.num_classes=1"]
    overrides += [
        "paths.root_dir=/tmp",
        "paths.output_dir=/tmp/x",
        f"preprocess.size={[32] * dims}",
    ]
    overrides += [f"preprocess.spacing={[4.0] * dims}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = instantiate(cfg.net).eval()
    covariates = torch.tensor([[50.0, 1.0, float("nan")], [70.0, 0.0, 12.0]])
    with torch.no_grad():
        out = model(torch.rand(2, 1, *[32] * dims), covariates)
    assert tuple(out.shape) == (2, 1)
    assert torch.isfinite(out).all()
