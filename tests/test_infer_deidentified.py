"""``medimg infer`` on de-identified series: absent identification attributes written empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medimg.cli import main
from medimg.export.tiny import export_tiny


def dciodvfy(path: Path) -> list[str]:
    """Error lines dciodvfy (dicom3tools) reports for a file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [x for x in (result.stdout + result.stderr).splitlines() if x.startswith("Error")]


GROUPS = {
    "birth_date": ("PatientBirthDate",),
    "name_and_id": ("PatientName", "PatientID"),
    "study_date_time_id": ("StudyDate", "StudyTime", "StudyID"),
}
GROUPS["all"] = tuple(k for group in GROUPS.values() for k in group)
OUTPUTS = {"segmentation": "seg.dcm", "classification": "sr.dcm"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: export_tiny(kind, root / kind) for kind in OUTPUTS}


@pytest.fixture(scope="module")
def source(manifests) -> Path:
    manifest = manifests["internal"]
    return manifest.parent / pd.read_csv(manifest)["image"].iloc[0]


def _deidentified(source: Path, removed: tuple[str, ...], folder: Path) -> Path:
    """A copy of the series with the given attributes deleted from every instance."""
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        for keyword in removed:
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.save_as(folder / path.name)
    return folder


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_deidentified_series_gives_valid_dicom(models, source, kind, group, tmp_path, capsys):
    removed = GROUPS[group]
    series = _deidentified(source, removed, tmp_path / "series")
    before = {p.name: p.read_bytes() for p in series.iterdir()}
    out = tmp_path / "out"
    status = main(
        ["infer", "--model", str(models[kind]), "--input", str(series), "--output", str(out)]
    )
    assert status == 0, capsys.readouterr().err
    errors = dciodvfy(out / OUTPUTS[kind])
    assert errors == [], errors
    written = pydicom.dcmread(out / OUTPUTS[kind])
    for keyword in removed:
        # Present and empty: nothing invented or copied from elsewhere.
        assert keyword in written and not str(written.get(keyword) or ""), keyword
    # The user's files are untouched.
    assert {p.name: p.read_bytes() for p in series.iterdir()} == before


def test_medimg_infer_command_on_a_fully_deidentified_series(models, source, tmp_path):
    series = _deidentified(source, GROUPS["all"], tmp_path / "series")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "medimg"),
            "infer",
            "--model",
            str(models["classification"]),
            "--input",
            str(series),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert dciodvfy(out / "sr.dcm") == []


def test_sr_writer_survives_a_non_finite_probability(models, source, tmp_path):
    from medimg.deploy.dicom_out import save_dicom, structured_report
    from medimg.export import read_card

    sources = [pydicom.dcmread(p) for p in sorted(source.iterdir())]
    card = read_card(models["classification"])
    save_dicom(structured_report(sources, [float("nan")], card), tmp_path / "sr.dcm")
    assert dciodvfy(tmp_path / "sr.dcm") == []
