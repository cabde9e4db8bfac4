"""Training straight from public dataset layouts (MSD dataset.json) with NIfTI images."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medimg.data.image import read_image
from medimg.data.manifest import load_manifest
from tests.conftest import run_dir_of, run_script, train_overrides

pytestmark = pytest.mark.slow


def _msd_from_builtin(manifests, root):
    """An MSD-style task (NIfTI images and labels + dataset.json) from the tiny built-in data."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for _, case in load_manifest(manifests["internal"], "segmentation").iterrows():
        image = read_image(case["image"])
        name = f"lesion_{case['case_id']}.nii.gz"
        nib.save(
            nib.Nifti1Image(image.array.astype(np.int16), image.affine), root / "imagesTr" / name
        )
        mask = nib.load(case["mask"])
        nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), mask.affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "Lesion",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": len(training),
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json"


def test_train_segmentation_from_an_msd_task(manifests, tmp_path):
    dataset_json = _msd_from_builtin(manifests, tmp_path / "Task01_Lesion")
    overrides = train_overrides(
        tmp_path,
        tmp_path / "data",
        "experiment=seg3d",
        "data=msd",
        f"data.source.internal.dataset_json={dataset_json}",
        "logger=csv",
    )
    run_dir = run_dir_of(
        run_script(
            "train",
            *[o for o in overrides if "n_internal" not in o and "n_external" not in o],
            tmp=tmp_path,
        )
    )
    written = pd.read_csv(run_dir / "manifests" / "internal.csv")
    assert len(written) == len(json.loads(dataset_json.read_text())["training"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"test"} and "dice" in metrics["test"]
    assert json.loads((run_dir / "export" / "model_card.json").read_text())["parity"]["passed"]
