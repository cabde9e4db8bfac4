"""Two-stage fusion (init.from_image_only): the fusion network starts from the image-only net."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

from medimg.pipeline.build import build_net
from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.reference import (
    check_image_encoder_init,
    compare_with_references,
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
    check_image_encoder_init(cfg)  # the experiment as shipped passes its preflight
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
        (("trainer.devices=2",), "single process"),
        (("trainer.num_nodes=2",), "single process"),
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


def _predictions(folder, prob, label, cases):
    (folder / "predictions").mkdir(parents=True)
    frame = {"case_id": cases, "prob": prob, "label": label}
    pd.DataFrame(frame).to_csv(folder / "predictions" / "test.csv", index=False)


def test_the_run_is_compared_with_each_reference_on_the_same_cases(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 200)
    cases = [f"c{i}" for i in range(200)]
    good = label + rng.normal(0, 0.6, 200)
    weak = label + rng.normal(0, 1.5, 200)
    _predictions(tmp_path, good, label, cases)
    # The references list their cases in another order: they are matched by case_id.
    _predictions(tmp_path / "weak", weak[::-1], label[::-1], cases[::-1])
    _predictions(tmp_path / "same", good, label, cases)
    out = compare_with_references(tmp_path, {"weak": tmp_path / "weak", "same": tmp_path / "same"})
    weak_test = out["weak"]["test"]
    expected = roc_auc_score(label, good) - roc_auc_score(label, weak)
    assert weak_test["auroc_difference"] == pytest.approx(expected, abs=1e-12)
    assert weak_test["ci_low"] > 0 and weak_test["p_value"] < 0.001 and weak_test["n"] == 200
    assert out["same"]["test"]["auroc_difference"] == 0.0
    assert out["same"]["test"]["p_value"] == 1.0
