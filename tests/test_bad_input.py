"""Bad input stops the training script before training, naming the path and the problem."""

from __future__ import annotations

import pytest

from medimg.data.manifest import read_manifest
from tests.conftest import run_script

pytestmark = pytest.mark.slow


def _manifest(manifests, tmp_path, edit):
    frame = read_manifest(manifests["internal"], ["case_id", "patient_id", "image"])
    frame = edit(frame)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def _empty_series(tmp_path):
    folder = tmp_path / "empty_series"
    folder.mkdir()
    return folder


def _refused_run(tmp_path, *sources):
    """Train on user manifests; the run must stop with exit 2, no traceback and no checkpoint."""
    result = run_script(
        "train",
        "data=manifest",
        *sources,
        f"paths.runs_dir={tmp_path / 'runs'}",
        "logger=csv",
        tmp=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
    return result


CASES = {
    "missing file": (
        lambda f, t: f.assign(image=[str(t / "gone")] + list(f["image"][1:])),
        lambda t: f"row 2 (case A0001_s1): column 'image': file not found: {t / 'gone'}",
    ),
    "empty DICOM folder": (
        lambda f, t: f.assign(image=[str(_empty_series(t))] + list(f["image"][1:])),
        lambda t: f"column 'image': DICOM folder has no DICOM images: {t / 'empty_series'}",
    ),
    "missing column": (
        lambda f, t: f.drop(columns=["label"]),
        lambda t: "bad.csv: manifest is missing required column(s) ['label']",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_stops_before_training(case, manifests, tmp_path):
    edit, expected = CASES[case]
    path = _manifest(manifests, tmp_path, lambda f: edit(f, tmp_path))
    result = _refused_run(tmp_path, f"data.source.internal={path}")
    assert expected(tmp_path) in result.stderr
    assert not list((tmp_path / "runs").rglob("metrics.csv"))


def test_external_set_sharing_patients_with_training_is_refused(manifests, tmp_path):
    frame = read_manifest(manifests["internal"], ["case_id", "patient_id", "image"])
    external = tmp_path / "leaky_external.csv"
    frame.iloc[:3].assign(case_id=lambda f: "X" + f["case_id"]).to_csv(external, index=False)
    result = _refused_run(
        tmp_path,
        f"data.source.internal={manifests['internal']}",
        f"+data.source.external.leaky={external}",
    )
    assert "patient_id" in result.stderr and "leaky" in result.stderr
