"""Two-stage fusion (init.from_image_only): the fusion network starts from the image-only net."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from medimg.pipeline.build import build_net
from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.reference import (
    check_image_encoder_init,
    image_only_config,
    with_image_encoder,
)
from medimg.pipeline.resolvers import register_resolvers
from medimg.pipeline.schema import register_schemas
from tests.conftest import run_script


def _clinical(tmp_path, *overrides: str):
    register_schemas()
    register_resolvers()
    base = [
        "experiment=cls3d_clinical",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*base, *overrides])


def test_the_fusion_encoder_starts_from_the_image_only_weights(tmp_path):
    cfg = _clinical(tmp_path)
    assert cfg.init.from_image_only
    # The image-only network the reference trains, standing in for its trained weights.
    torch.manual_seed(1)
    image_net = build_net(image_only_config(cfg, tmp_path))
    torch.save(image_net.state_dict(), tmp_path / "image_net.pt")
    torch.manual_seed(2)
    fusion = build_net(with_image_encoder(cfg, tmp_path / "image_net.pt"))
    source, target = image_net.state_dict(), fusion.image_net.state_dict()
    assert list(source) == list(target)
    differ = [k for k in source if source[k].shape != target[k].shape]
    # Only the output layer differs (classes vs fusion features); everything else is copied.
    assert differ == ["fc.weight", "fc.bias"]
    assert all(torch.equal(source[k], target[k]) for k in source if k not in differ)
    # The image-only config itself must not recurse into another two-stage run.
    assert not image_only_config(cfg, tmp_path).init.from_image_only


@pytest.mark.parametrize(
    ("overrides", "needs"),
    [
        (("net=densenet121",), "fusion network"),
        (("reference.image_only=false",), "reference.image_only=true"),
        (("init.weights=/some/file.pt",), "no init.weights"),
        (("trainer=ddp",), "single process"),
    ],
)
def test_preflight_names_what_two_stage_fusion_needs(tmp_path, overrides, needs):
    with pytest.raises(ValueError, match=f"init.from_image_only=true needs.*{needs}"):
        check_image_encoder_init(_clinical(tmp_path, *overrides))


def test_the_script_refuses_a_bad_two_stage_config_before_training(tmp_path):
    result = run_script(
        "train",
        "experiment=cls3d_clinical",
        "net=densenet121",
        f"paths.root_dir={tmp_path}",
        "logger=csv",
        tmp=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "init.from_image_only=true needs a fusion network" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before any data was made
