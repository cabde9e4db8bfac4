"""``medimg infer``: exported model on a DICOM series or NIfTI → JSON + DICOM SEG/SR + NIfTI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from medimg.cli import main
from medimg.data.image import read_image
from medimg.data.loading import mask_on_image_grid
from medimg.export import load_model
from medimg.export.tiny import export_tiny


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """Errors and warnings dciodvfy (dicom3tools) reports for a file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warn")]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: export_tiny(kind, root / kind) for kind in ("segmentation", "classification")}


@pytest.fixture(scope="module")
def series(manifests) -> dict[str, Path]:
    """One DICOM series folder per site (site B: flipped axes, descending slices)."""
    return {
        site: manifests[site].parent / pd.read_csv(manifests[site])["image"].iloc[0]
        for site in ("internal", "external")
    }


def _infer(model: Path, source: Path, out: Path, capsys) -> tuple[int, str, str]:
    status = main(["infer", "--model", str(model), "--input", str(source), "--output", str(out)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _expected_labels(model: Path, source: Path) -> np.ndarray:
    image = read_image(source)
    volume = torch.from_numpy(np.asarray(image.array, dtype=np.float32))
    out = load_model(model)(volume, torch.from_numpy(image.affine))
    return out.argmax(0).numpy()


@pytest.mark.parametrize("site", ["internal", "external"])
def test_seg_is_valid_references_the_source_and_lines_up(models, series, site, tmp_path, capsys):
    status, out, err = _infer(models["segmentation"], series[site], tmp_path, capsys)
    assert status == 0, err
    seg_path = tmp_path / "seg.dcm"
    errors, warnings = dciodvfy(seg_path)
    assert errors == [], errors
    seg = hd.seg.segread(seg_path)
    sources = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in series[site].iterdir())
    }
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    expected = _expected_labels(models["segmentation"], series[site])
    assert 0 < (expected == 1).sum() < expected.size  # a mask with content on both sides
    image = read_image(series[site])
    frames = seg.pixel_array
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source_uid = (
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        source = sources[str(source_uid)]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose(position, source.ImagePositionPatient, atol=1e-3)
        ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(source.ImagePositionPatient, float)
        k = int(round(np.linalg.solve(image.affine[:3, :3], ras - image.affine[:3, 3])[2]))
        assert np.array_equal(frames[index] > 0, expected[:, :, k].T == 1)
    # The data layer's SEG reader (aligned by world position) gives back the same mask.
    back = read_image(seg_path)
    aligned = mask_on_image_grid(back.array, back.affine, image.array.shape, image.affine)
    assert np.array_equal(aligned > 0, expected == 1)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["segmentation"]["lesion"]["voxels"] == int((expected == 1).sum())
    assert result["outputs"] == {"dicom": "seg.dcm"} and "seg.dcm" in out


def test_sr_is_valid_and_carries_the_probability(models, series, tmp_path, capsys):
    status, _, err = _infer(models["classification"], series["internal"], tmp_path, capsys)
    assert status == 0, err
    errors, warnings = dciodvfy(tmp_path / "sr.dcm")
    assert errors == [], errors
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    image = read_image(series["internal"])
    volume = torch.from_numpy(np.asarray(image.array, dtype=np.float32))
    probability = float(
        load_model(models["classification"])(volume, torch.from_numpy(image.affine))[0]
    )
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == "122157"
    ]
    assert values == [pytest.approx(probability, abs=1e-6)]
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    sources = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in series["internal"].iterdir()
    }
    assert evidence == sources
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["classification"]["probability"] == pytest.approx(probability, abs=1e-6)
    assert result["classification"]["present"] == (probability >= 0.5)


def _walk(sequence):
    for item in sequence:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def test_nifti_input_gives_a_nifti_mask_and_no_phi(models, series, manifests, tmp_path, capsys):
    image = read_image(series["external"])
    nifti = tmp_path / "in" / "case.nii.gz"
    nifti.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(image.array, np.float32), image.affine), str(nifti))
    out = tmp_path / "out"
    status, _, err = _infer(models["segmentation"], nifti, out, capsys)
    assert status == 0, err
    mask = nib.load(out / "mask.nii.gz")
    assert np.allclose(mask.affine, image.affine, atol=1e-5)
    assert np.array_equal(np.asarray(mask.dataobj), _expected_labels(models["segmentation"], nifti))
    assert sorted(p.name for p in out.iterdir()) == ["mask.nii.gz", "result.json"]
    text = (out / "result.json").read_text()
    ds = pydicom.dcmread(next(series["external"].iterdir()), stop_before_pixels=True)
    for needle in (
        str(ds.PatientID),
        str(ds.PatientName),
        str(ds.StudyDate),
        "case.nii",
        str(tmp_path),
    ):
        assert needle not in text


def test_validator_catches_a_broken_seg(models, series, tmp_path, capsys):
    """The dciodvfy check above can fail: a SEG without its segment sequence is an error."""
    assert _infer(models["segmentation"], series["internal"], tmp_path, capsys)[0] == 0
    broken = pydicom.dcmread(tmp_path / "seg.dcm")
    del broken.SegmentSequence
    broken.save_as(tmp_path / "broken.dcm")
    assert dciodvfy(tmp_path / "broken.dcm")[0]


def test_corrupted_model_or_wrong_modality_is_refused(models, series, tmp_path, capsys):
    bad = tmp_path / "model.ts"
    data = bytearray(models["classification"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    status, out, err = _infer(bad, series["internal"], tmp_path / "out", capsys)
    assert status == 2 and "checksum mismatch" in err and "model.ts" in err
    assert not (tmp_path / "out" / "result.json").exists()
    mr = tmp_path / "mr"
    mr.mkdir()
    for path in series["internal"].iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(mr / path.name)
    status, _, err = _infer(models["classification"], mr, tmp_path / "out2", capsys)
    assert status == 2 and "Modality is MR" in err


def test_radiograph_seg_and_sr_are_valid(tmp_path, capsys):
    """A 2D model on a DX file: one-frame SEG (PatientOrientation kept) and an SR, no errors."""
    from medimg.data.synthetic_dx import make_synthetic_dx
    from medimg.export.tiny import TINY_PREPROCESS_2D

    manifest = make_synthetic_dx(tmp_path / "dx", n_internal=2, n_external=1)["internal"]
    image = manifest.parent / pd.read_csv(manifest)["image"].iloc[0]
    for kind, name in (("segmentation", "seg.dcm"), ("classification", "sr.dcm")):
        model = export_tiny(kind, tmp_path / kind, preprocess=TINY_PREPROCESS_2D)
        status, _, err = _infer(model, image, tmp_path / f"out-{kind}", capsys)
        assert status == 0, err
        errors, _ = dciodvfy(tmp_path / f"out-{kind}" / name)
        assert errors == [], errors
    # highdicom 0.28's reader wants a SliceThickness that a radiograph does not have: pydicom.
    seg = pydicom.dcmread(tmp_path / "out-segmentation" / "seg.dcm")
    expected = _expected_labels(tmp_path / "segmentation" / "model.ts", image)
    assert 0 < (expected == 1).sum() < expected.size
    frame = seg.pixel_array.reshape(expected.shape[1], expected.shape[0])
    assert np.array_equal(frame > 0, expected[:, :, 0].T == 1)
    source = pydicom.dcmread(image, stop_before_pixels=True)
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_multilabel_findings_use_each_labels_threshold(series):
    from types import SimpleNamespace

    from medimg.deploy.dicom_out import structured_report
    from medimg.deploy.infer import findings
    from medimg.deploy.source import read_input
    from medimg.export.codes import label_entries

    names = ["nodule", "effusion", "cardiomegaly"]
    card = {
        "label_names": names,
        "labels": label_entries(names),
        "multilabel": True,
        "operating_point": {"thresholds": {"nodule": 0.2, "effusion": 0.9, "cardiomegaly": 0.5}},
        "experiment": "multilabel-test",
        "weights_sha256": "ab" * 32,
    }
    probabilities = [0.3, 0.8, 0.5]
    model = SimpleNamespace(card=card, task="classification")
    labels = findings(model, torch.tensor(probabilities), None)["classification"]["labels"]
    expected = {"nodule": True, "effusion": False, "cardiomegaly": True}
    assert {name: entry["present"] for name, entry in labels.items()} == expected
    sr = structured_report(read_input(series["internal"]).sources, probabilities, card)
    verdicts = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "CODE"
        and item.ConceptNameCodeSequence[0].CodeMeaning
        in ("Nodule", "Pleural effusion", "Cardiomegaly")
    ]
    assert verdicts == ["Present", "Absent", "Present"]
