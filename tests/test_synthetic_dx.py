"""The synthetic chest-radiograph (DX) dataset: DICOM content, mask alignment, findings, caching."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation

from medimg.data.chest_phantom import (
    HEART_LABEL,
    LUNG_LABEL,
    ChestAnatomy,
    Findings,
    draw_chest,
    place_nodule,
)
from medimg.data.image import read_image
from medimg.data.synthetic_dx import FINDINGS, MANIFEST_COLUMNS, make_synthetic_dx

N_INTERNAL, N_EXTERNAL = 14, 5
ANATOMY = ChestAnatomy(half_width=140.0, ctr=0.44, dome_right=80.0, dome_left=88.0, rib_phase=5.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_synthetic_dx(
        tmp_path_factory.mktemp("dx"), seed=3, n_internal=N_INTERNAL, n_external=N_EXTERNAL
    )


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _all_rows(dataset: dict[str, Path]) -> list[tuple[Path, dict[str, str]]]:
    return [(path.parent, row) for path in dataset.values() for row in _rows(path)]


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_manifests_columns_sites_and_follow_ups(dataset):
    internal, external = _rows(dataset["internal"]), _rows(dataset["external"])
    for rows in (internal, external):
        assert list(rows[0]) == list(MANIFEST_COLUMNS)
        for row in rows:
            findings = [int(row[name]) for name in FINDINGS]
            assert int(row["label"]) == int(any(findings))
    assert len({r["patient_id"] for r in internal}) == N_INTERNAL
    assert len(internal) > N_INTERNAL  # some patients have a follow-up study
    assert len(external) == N_EXTERNAL and {r["site"] for r in external} == {"B"}
    internal_makers = {r["manufacturer"] for r in internal}
    external_makers = {r["manufacturer"] for r in external}
    assert len(internal_makers) == 2 and not internal_makers & external_makers
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in internal:
        by_patient.setdefault(row["patient_id"], []).append(row)
    pairs = [studies for studies in by_patient.values() if len(studies) == 2]
    assert pairs
    for first, second in pairs:
        assert first["study_uid"] != second["study_uid"]
        assert (first["sex"], first["age"]) == (second["sex"], second["age"])
        assert first["cardiomegaly"] == second["cardiomegaly"]  # a patient's heart persists


def test_dicom_headers_with_pydicom(dataset):
    photometric = set()
    for folder, row in _all_rows(dataset):
        ds = pydicom.dcmread(folder / row["image"])
        assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
        assert ds.file_meta.MediaStorageSOPClassUID == DigitalXRayImageStorageForPresentation
        assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
        assert int(ds.pixel_array.max()) <= 4095
        assert ds.PatientID == row["patient_id"] and ds.StudyInstanceUID == row["study_uid"]
        assert ds.Manufacturer == row["manufacturer"]
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert UID(uid).is_valid
        assert "ImagerPixelSpacing" in ds
        photometric.add(ds.PhotometricInterpretation)
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_dicom_files_pass_dciodvfy(dataset):
    """dicom3tools' validator checks every DX For Presentation attribute the IOD requires."""
    for folder, row in _all_rows(dataset)[::4]:
        result = subprocess.run(
            ["dciodvfy", str(folder / row["image"])], capture_output=True, text=True, check=False
        )
        problems = [
            line for line in result.stderr.splitlines() if line.startswith(("Error", "Warning"))
        ]
        assert "DXImageForPresentation" in result.stderr and not problems, problems


def test_read_image_matches_pydicom_and_mask_lines_up(dataset):
    for folder, row in _all_rows(dataset):
        ds = pydicom.dcmread(folder / row["image"])
        image = read_image(folder / row["image"])
        assert image.meta["modality"] == "DX" and image.meta["geometry"] == "2d-projection"
        stored = ds.pixel_array.astype(np.float32)
        expected = 4095.0 - stored if ds.PhotometricInterpretation == "MONOCHROME1" else stored
        assert image.array.shape == (ds.Columns, ds.Rows, 1)
        np.testing.assert_array_equal(image.array[..., 0], expected.T)
        spacing = [float(v) for v in ds.get("PixelSpacing", ds.ImagerPixelSpacing)]
        assert np.allclose(np.abs(np.diag(image.affine)[:2]), spacing[::-1])

        mask_file = nib.load(folder / row["mask"])
        assert mask_file.ndim == 2
        mask = read_image(folder / row["mask"])
        assert mask.array.shape == image.array.shape[:2]
        assert set(np.unique(mask.array)) == {0, LUNG_LABEL, HEART_LABEL}
        # Same voxel → same world point: the label map lies on the image's pixel grid.
        assert np.allclose(mask.affine, image.affine, atol=1e-5)
        pixels, labels = image.array[..., 0], mask.array
        lung, heart = pixels[labels == LUNG_LABEL].mean(), pixels[labels == HEART_LABEL].mean()
        assert heart - lung > 0.15 * (pixels.max() - pixels.min())


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    original = dataset["internal"].parents[1]
    again = make_synthetic_dx(
        tmp_path / "again", seed=3, n_internal=N_INTERNAL, n_external=N_EXTERNAL, workers=1
    )
    assert _hashes(again["internal"].parents[1]) == _hashes(original)
    other = make_synthetic_dx(tmp_path / "other", seed=4, n_internal=2, n_external=1, workers=1)
    first = sorted(other["internal"].parent.glob("images/*.dcm"))[0]
    assert (original / "site_A" / "images" / first.name).read_bytes() != first.read_bytes()


def test_complete_dataset_is_reused_and_incomplete_is_rebuilt(tmp_path):
    paths = make_synthetic_dx(tmp_path, seed=1, n_internal=2, n_external=1, workers=1)
    folder = paths["internal"].parents[1]
    image = next(folder.glob("site_A/images/*.dcm"))
    image.write_bytes(b"left alone")  # a reused dataset is not regenerated
    assert make_synthetic_dx(tmp_path, seed=1, n_internal=2, n_external=1) == paths
    assert image.read_bytes() == b"left alone"
    (folder / "COMPLETE").unlink()
    make_synthetic_dx(tmp_path, seed=1, n_internal=2, n_external=1, workers=1)
    assert image.read_bytes() != b"left alone" and (folder / "COMPLETE").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_negative_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        make_synthetic_dx(tmp_path, n_internal=-1)


def _grid(spacing: float = 1.0, half: float = 179.0) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(-half, half + spacing / 2, spacing)
    return axis[None, :], axis[:, None]


def test_nodule_is_a_bright_disc_in_a_lung():
    x, y = _grid()
    centre = place_nodule(np.random.default_rng(0), ANATOMY, Findings(), radius=8.0)
    plain, labels = draw_chest(ANATOMY, Findings(), x, y)
    nodule, _ = draw_chest(ANATOMY, Findings(nodule=(*centre, 8.0, 0.25)), x, y)
    disc = np.hypot(x - centre[0], y - centre[1]) <= 6.0
    far = np.hypot(x - centre[0], y - centre[1]) >= 20.0
    assert (labels[disc] == LUNG_LABEL).all()  # placed in aerated lung
    assert (nodule - plain)[disc].mean() > 0.2
    assert np.abs(nodule - plain)[far].max() < 1e-3


@pytest.mark.parametrize("side", [-1, 1])
def test_effusion_opacifies_the_lung_base_of_its_side(side):
    x, y = _grid()
    plain, plain_labels = draw_chest(ANATOMY, Findings(), x, y)
    fluid, fluid_labels = draw_chest(
        ANATOMY, Findings(effusion=(side,), effusion_height=50.0), x, y
    )
    this_side, other_side = side * x > 0, side * x < 0
    lost = (plain_labels == LUNG_LABEL) & (fluid_labels != LUNG_LABEL)
    assert lost[np.broadcast_to(this_side, lost.shape)].sum() > 500  # mm², the base is opaque
    assert not lost[np.broadcast_to(other_side, lost.shape)].any()
    assert (fluid - plain)[lost].mean() > 0.3  # near soft-tissue density
    assert lost.nonzero()[0].min() > np.nonzero(plain_labels == LUNG_LABEL)[0].mean()  # low


def test_cardiomegaly_widens_the_heart_to_its_cardiothoracic_ratio():
    x, y = _grid(0.5)
    widths = {}
    for ctr in (0.42, 0.58):
        anatomy = ChestAnatomy(140.0, ctr, 80.0, 88.0, 5.0)
        _, labels = draw_chest(anatomy, Findings(), x, y)
        columns = np.nonzero((labels == HEART_LABEL).any(axis=0))[0]
        widths[ctr] = (columns.max() - columns.min() + 1) * 0.5
        assert widths[ctr] / (2 * anatomy.half_width) == pytest.approx(ctr, abs=0.01)
    assert widths[0.58] - widths[0.42] > 40.0  # mm
