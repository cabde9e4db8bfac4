"""End-to-end: the real training script on tiny data, its run folder and its artefacts."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import ROOT, run_dir_of, run_script, script_env, train_overrides

pytestmark = pytest.mark.slow


def test_run_folder_holds_everything(cls_run):
    run_dir, result = cls_run
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)  # last line: the run folder
    for name in (
        "config.yaml",
        "run_info.json",
        "splits.csv",
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "predictions/test.csv",
        "predictions/external.csv",
        "export/model.ts",
        "export/model_card.json",
        "logs/metrics.csv",
    ):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["net"]["_target_"] == "monai.networks.nets.DenseNet121"
    assert "${" not in (run_dir / "config.yaml").read_text()  # resolved
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["seed"] == 42 and info["code_version"]["commit"]
    assert info["software"]["torch"] and len(info["config_sha256"]) == 64


def test_metrics_per_set_match_the_prediction_files(cls_run):
    from sklearn.metrics import roc_auc_score

    run_dir, _ = cls_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("test", "external"):
        table = pd.read_csv(run_dir / "predictions" / f"{name}.csv")
        assert metrics[name]["n"] == len(table)
        assert metrics[name]["auroc"] == pytest.approx(
            roc_auc_score(table["label"], table["prob"]), abs=1e-12
        )


def test_splits_are_by_patient_and_cover_the_internal_site(cls_run, manifests):
    run_dir, _ = cls_run
    splits = pd.read_csv(run_dir / "splits.csv")
    internal = pd.read_csv(manifests["internal"])
    assert sorted(splits["case_id"]) == sorted(internal["case_id"])
    assert splits.groupby("patient_id")["split"].nunique().max() == 1
    test_cases = set(pd.read_csv(run_dir / "predictions" / "test.csv")["case_id"])
    assert test_cases == set(splits.loc[splits["split"] == "test", "case_id"])


def test_exported_model_runs_with_torch_alone_and_matches_checkpoint(cls_run, manifests, tmp_path):
    """model.ts in a fresh process that refuses to import medimg or MONAI reproduces the test CSV."""
    from medimg.data.loading import load_transform, raw_volume
    from medimg.data.manifest import load_manifest

    run_dir, _ = cls_run
    predictions = pd.read_csv(run_dir / "predictions" / "test.csv", dtype={"case_id": str})
    frame = load_manifest(manifests["internal"], "classification").set_index("case_id")
    reader = load_transform(with_mask=False)
    volumes, affines = [], []
    for case_id in predictions["case_id"]:
        volume, affine = raw_volume(reader({"image": frame.loc[case_id, "image"]})["image"])
        volumes.append(volume)
        affines.append(affine)
    torch.save({"volumes": volumes, "affines": affines}, tmp_path / "inputs.pt")
    program = f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('medimg', 'monai'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch
model = torch.jit.load({str(run_dir / "export" / "model.ts")!r})
data = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
with torch.no_grad():
    probs = [float(model(v, a)[0]) for v, a in zip(data['volumes'], data['affines'])]
print(json.dumps({{'probs': probs, 'modules': sorted(m for m in sys.modules if m.startswith(('medimg', 'monai')))}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=script_env(tmp_path),
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    diff = (
        (torch.tensor(report["probs"]) - torch.tensor(predictions["prob"].to_numpy())).abs().max()
    )
    assert diff <= 1e-4
    card = json.loads((run_dir / "export" / "model_card.json").read_text())
    assert card["parity"]["passed"] and card["parity"]["max_abs_diff"] <= 1e-4
    assert card["label_names"] == ["no_lesion", "lesion"] and card["network_input_shape"] == [
        1,
        1,
        48,
        48,
        40,
    ]


def test_model_card_is_embedded_and_has_no_identifiers(cls_run, manifests):
    from medimg.export.torchscript import read_card

    run_dir, _ = cls_run
    card = read_card(run_dir / "export" / "model.ts")
    assert (
        card["task"] == "classification"
        and "test" in card["metrics"]
        and "external" in card["metrics"]
    )
    assert card["training_data"]["cases"] > 0 and "sex" in card["training_data"]
    text = json.dumps(card)
    for patient_id in pd.read_csv(manifests["internal"])["patient_id"]:
        assert patient_id not in text


def test_no_phi_or_data_paths_in_checkpoints_trackers_or_export(cls_run, data_dir):
    """Patient names/IDs from DICOM headers and data paths stay out of every artefact but CSVs."""
    run_dir, _ = cls_run
    patient_ids = pd.read_csv(next(data_dir.glob("*/site_A/manifest.csv")))["patient_id"].tolist()
    needles = [str(data_dir).encode(), b"SYNTH^"] + [p.encode() for p in patient_ids[:10]]
    scanned = 0
    for path in run_dir.rglob("*"):
        if (
            not path.is_file()
            or path.suffix == ".csv"
            or path.name in ("config.yaml", "train.log", "run_info.json")
        ):
            continue
        if ".hydra" in path.parts:
            continue
        blob = path.read_bytes()
        scanned += 1
        for needle in needles:
            assert needle not in blob, f"{needle!r} found in {path.relative_to(run_dir)}"
    assert scanned >= 5
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb did not run offline"


def test_segmentation_experiment(tmp_path, data_dir):
    result = run_script(
        "train",
        *train_overrides(tmp_path, data_dir, "experiment=seg3d"),
        tmp=tmp_path,
    )
    run_dir = run_dir_of(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"dice", "n_with_foreground", "empty_false_positive_rate"} <= set(metrics["test"])
    assert 0.0 <= metrics["test"]["dice"] <= 1.0
    card = json.loads((run_dir / "export" / "model_card.json").read_text())
    assert card["task"] == "segmentation" and card["parity"]["passed"]
    table = pd.read_csv(run_dir / "predictions" / "test.csv")
    assert {"case_id", "dice", "reference_voxels", "predicted_voxels"} <= set(table.columns)


def test_scripts_are_thin_and_import_only_the_entry_points():
    for name in ("train", "evaluate"):
        text = (ROOT / "scripts" / f"{name}.py").read_text()
        assert "from medimg.pipeline.entry import" in text and len(text.splitlines()) < 10


def test_tensorboard_logger_alternative(tmp_path, data_dir):
    overrides = train_overrides(
        tmp_path,
        data_dir,
        "logger=tensorboard",
        "export.enabled=false",
        "trainer.limit_train_batches=0.25",
    )
    run_dir = run_dir_of(run_script("train", *overrides, tmp=tmp_path))
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run_dir / "wandb").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["n"] > 0
