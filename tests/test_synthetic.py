"""Tests for the deterministic synthetic multi-site CT dataset generator."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

import medimg.data.synthetic as synthetic
from medimg.data.synthetic import (
    EXTERNAL_SITE,
    INTERNAL_SITE,
    INTERNAL_SITE_LEGACY,
    SiteSpec,
    make_synthetic_ct,
)
from medimg.data.synthetic_clinical import clinical_rng

COLUMNS = [
    "case_id",
    "patient_id",
    "study_uid",
    "image",
    "label",
    "mask",
    "site",
    "sex",
    "age",
    "manufacturer",
    "mask_organs",
    "lesion_volume_ml",
    "crp",
    "outcome",
]
# The phantom's specification, restated: true HU of liver and kidney, organ labels.
LIVER_HU = 60.0
KIDNEY_HU = 20.0
LIVER, KIDNEY, LESION = 1, 2, 3
SCANNERS = {s.manufacturer: s for s in (INTERNAL_SITE, INTERNAL_SITE_LEGACY, EXTERNAL_SITE)}
SEED = 0
N_INTERNAL = 10
N_EXTERNAL = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small dataset shared by the read-only tests."""
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_ct(root, seed=SEED, n_internal=N_INTERNAL, n_external=N_EXTERNAL)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]


def _hu_volume(slices: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack(
        [s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices]
    )


def _dicom_world_lps(slices: list[pydicom.Dataset]) -> np.ndarray:
    """World LPS position of every voxel, shape (n_files, rows, cols, 3), from IPP/IOP only."""
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    spacing_row, spacing_col = (float(v) for v in slices[0].PixelSpacing)
    r = np.arange(slices[0].Rows)[:, None, None] * spacing_row * col_dir
    c = np.arange(slices[0].Columns)[None, :, None] * spacing_col * row_dir
    ipp = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    return ipp[:, None, None, :] + r[None] + c[None]


def _lesion_centroid_ras(slices: list[pydicom.Dataset], site: SiteSpec) -> np.ndarray:
    """Centroid (RAS mm) of the bright lesion found in the DICOM pixels alone."""
    hu = ndimage.uniform_filter(_hu_volume(slices), size=3)
    liver = LIVER_HU * site.hu_gain + site.hu_offset
    faintest_lesion = (LIVER_HU + 50.0 * site.lesion_contrast_scale) * site.hu_gain + site.hu_offset
    bone = ndimage.binary_dilation(hu > 300.0, iterations=3)
    candidate = (hu > (liver + faintest_lesion) / 2) & ~bone
    labels, n = ndimage.label(candidate)
    assert n >= 1
    largest = 1 + int(np.argmax(ndimage.sum(candidate, labels, range(1, n + 1))))
    world = _dicom_world_lps(slices)[labels == largest]
    return world.mean(axis=0) * np.array([-1.0, -1.0, 1.0])


def _scanner(row: dict[str, str]) -> SiteSpec:
    return SCANNERS[row["manufacturer"]]


def _hu_nifti_order(manifest: Path, row: dict[str, str]) -> np.ndarray:
    """The series in HU, indexed like its NIfTI masks: (column, row, file index)."""
    return _hu_volume(_series(manifest.parent / row["image"])).transpose(2, 1, 0)


def _calibrated(hu: float, site: SiteSpec) -> float:
    return hu * site.hu_gain + site.hu_offset


def _mask_centroid_ras(path: Path) -> np.ndarray:
    image = nib.load(path)
    ijk = np.argwhere(np.asarray(image.dataobj) > 0)
    return nib.affines.apply_affine(image.affine, ijk).mean(axis=0)


def test_manifest_columns_and_paths(dataset: dict[str, Path]) -> None:
    scanners = {"internal": {INTERNAL_SITE, INTERNAL_SITE_LEGACY}, "external": {EXTERNAL_SITE}}
    for key, site in (("internal", INTERNAL_SITE), ("external", EXTERNAL_SITE)):
        manifest = dataset[key]
        assert manifest.name == "manifest.csv"
        assert manifest.parent.name == f"site_{site.name}"
        with manifest.open() as handle:
            assert handle.readline().strip().split(",") == COLUMNS
        rows = _rows(manifest)
        for row in rows:
            assert not Path(row["image"]).is_absolute()
            assert row["image"] == f"images/{row['case_id']}"
            assert row["mask"] == f"masks/{row['case_id']}.nii.gz"
            assert row["mask_organs"] == f"organs/{row['case_id']}.nii.gz"
            assert len(list((manifest.parent / row["image"]).glob("*.dcm"))) == site.n_slices
            assert (manifest.parent / row["mask"]).is_file()
            assert (manifest.parent / row["mask_organs"]).is_file()
            assert row["site"] == site.name
            assert _scanner(row) in scanners[key]
            assert (float(row["lesion_volume_ml"]) > 0) == (row["label"] == "1")
            assert row["crp"] == "" or 0.0 <= float(row["crp"]) < 200.0
            assert row["outcome"] in {"0", "1"}
            assert row["sex"] in {"M", "F"}
            assert 25 <= int(row["age"]) <= 85
            assert row["label"] in {"0", "1"}
            assert row["case_id"].startswith(row["patient_id"] + "_s")
        assert len({row["study_uid"] for row in rows}) == len(rows)
        assert {row["label"] for row in rows} == {"0", "1"}
        assert {_scanner(row) for row in rows} == scanners[key]
    # With this seed some CRP values are missing (empty cells), as in a real lab export.
    assert "" in {row["crp"] for row in _rows(dataset["internal"])}
    # Sex and lesion presence are independent draws (v2 drew both from one random number).
    first_studies = [r for m in dataset.values() for r in _rows(m) if r["case_id"].endswith("_s1")]
    assert {(r["sex"] == "M") == (r["label"] == "1") for r in first_studies} == {True, False}


def test_patients_and_follow_up_studies(dataset: dict[str, Path]) -> None:
    internal = _rows(dataset["internal"])
    patients = {row["patient_id"] for row in internal}
    assert len(patients) == N_INTERNAL
    assert len(internal) > N_INTERNAL
    follow_ups = [row for row in internal if row["case_id"].endswith("_s2")]
    assert follow_ups
    for row in follow_ups:
        first = next(r for r in internal if r["case_id"] == f"{row['patient_id']}_s1")
        assert first["study_uid"] != row["study_uid"]
        assert (first["sex"], first["age"]) == (row["sex"], row["age"])
        assert first["manufacturer"] == row["manufacturer"]  # a patient keeps their scanner
    external = _rows(dataset["external"])
    assert [row["case_id"] for row in external] == [
        f"B{i:04d}_s1" for i in range(1, N_EXTERNAL + 1)
    ]


def test_mask_matches_label(dataset: dict[str, Path]) -> None:
    for manifest in dataset.values():
        for row in _rows(manifest):
            image = nib.load(manifest.parent / row["mask"])
            data = np.asarray(image.dataobj)
            assert data.dtype == np.uint8
            assert set(np.unique(data)) <= {0, 1}
            assert int(data.any()) == int(row["label"])
            organs = nib.load(manifest.parent / row["mask_organs"])
            labels = np.asarray(organs.dataobj)
            assert labels.dtype == np.uint8
            np.testing.assert_array_equal(organs.affine, image.affine)
            assert labels.shape == data.shape
            assert {0, LIVER, KIDNEY} <= set(np.unique(labels)) <= {0, LIVER, KIDNEY, LESION}
            np.testing.assert_array_equal(labels == LESION, data == 1)
            # Two kidneys, one on each side of the body (RAS x of their centroids).
            kidneys, n = ndimage.label(labels == KIDNEY)
            assert n == 2
            ras_x = [
                nib.affines.apply_affine(organs.affine, np.argwhere(kidneys == i).mean(axis=0))[0]
                for i in (1, 2)
            ]
            assert min(ras_x) < -20.0 < 20.0 < max(ras_x)


@pytest.mark.parametrize("key", ["internal", "external"])
def test_organ_labels_match_image_intensities(dataset: dict[str, Path], key: str) -> None:
    """Inside each organ label the DICOM pixels show that organ's tissue (label and image align)."""
    for row in _rows(dataset[key])[:6]:
        site = _scanner(row)
        hu = _hu_nifti_order(dataset[key], row)
        labels = np.asarray(nib.load(dataset[key].parent / row["mask_organs"]).dataobj)
        # The phantom is sampled at voxel centres, so every labelled voxel shows its tissue
        # (plus noise) up to the label's edge: a label off by one voxel moves these means.
        lesion_zone = ndimage.binary_dilation(labels == LESION, iterations=1)  # soft edge
        means = {}
        for label, tissue in ((LIVER, LIVER_HU), (KIDNEY, KIDNEY_HU)):
            region = (labels == label) & ~lesion_zone
            means[label] = float(hu[region].mean())
            tolerance = 4.0 * site.noise_hu * site.hu_gain / np.sqrt(region.sum()) + 0.5
            assert abs(means[label] - _calibrated(tissue, site)) < tolerance, row["case_id"]
        liver, kidney = means[LIVER], means[KIDNEY]
        # The kidney is framed by fat: its one-voxel outer rim is far darker than it.
        rim = ndimage.binary_dilation(labels == KIDNEY, iterations=1) & (labels == 0)
        assert np.median(hu[rim]) < kidney - 40.0
        if row["label"] == "1":
            lesion = float(np.median(hu[labels == LESION]))
            faintest = 70.0 * site.lesion_contrast_scale * site.hu_gain
            assert lesion > liver + 0.5 * faintest, row["case_id"]


def test_lesion_volume_matches_mask(dataset: dict[str, Path]) -> None:
    """``lesion_volume_ml`` is the lesion's volume: the mask's voxel count x voxel volume."""
    checked = 0
    for manifest in dataset.values():
        for row in _rows(manifest):
            image = nib.load(manifest.parent / row["mask"])
            voxel_ml = float(np.prod(image.header.get_zooms())) / 1000.0
            counted = int(np.count_nonzero(np.asarray(image.dataobj))) * voxel_ml
            volume = float(row["lesion_volume_ml"])
            # Discretisation error is < 3.1 % over the 179 lesions of the default dataset.
            assert counted == pytest.approx(volume, rel=0.05, abs=1e-9), row["case_id"]
            checked += volume > 0
    assert checked >= 3


@pytest.mark.parametrize("key,site", [("internal", INTERNAL_SITE), ("external", EXTERNAL_SITE)])
def test_slice_geometry(dataset: dict[str, Path], key: str, site: SiteSpec) -> None:
    row = _rows(dataset[key])[0]
    slices = _series(dataset[key].parent / row["image"])
    assert [int(s.InstanceNumber) for s in slices] == list(range(1, site.n_slices + 1))
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    steps = np.diff(ipp, axis=0)
    sign = -1.0 if site.descending else 1.0
    np.testing.assert_allclose(steps, np.tile(sign * site.slice_spacing * normal, (len(steps), 1)))
    z = ipp[:, 2]
    assert np.all(np.diff(z) < 0) if site.descending else np.all(np.diff(z) > 0)
    expected_iop = (
        [-1, 0, 0, 0, -1, 0] if site.orientation == "axial_flipped" else [1, 0, 0, 0, 1, 0]
    )
    np.testing.assert_array_equal(iop, expected_iop)
    np.testing.assert_allclose([float(v) for v in slices[0].PixelSpacing], [site.pixel_spacing] * 2)
    assert float(slices[0].SliceThickness) == site.slice_spacing
    # The field of view is centred on the world origin.
    world = _dicom_world_lps(slices)
    np.testing.assert_allclose(world.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-9)
    # Mask geometry: same voxel grid as the DICOM series, in RAS.
    mask = nib.load(dataset[key].parent / row["mask"])
    assert mask.shape == (site.cols, site.rows, site.n_slices)
    assert int(mask.header["qform_code"]) == 1 and int(mask.header["sform_code"]) == 1
    ras = world * np.array([-1.0, -1.0, 1.0])
    for k, r, c in [(0, 0, 0), (site.n_slices - 1, site.rows - 1, 0), (3, 5, site.cols - 2)]:
        np.testing.assert_allclose(nib.affines.apply_affine(mask.affine, [c, r, k]), ras[k, r, c])
    np.testing.assert_allclose(mask.get_qform(), mask.affine, atol=1e-4)


@pytest.mark.parametrize("key,site", [("internal", INTERNAL_SITE), ("external", EXTERNAL_SITE)])
def test_lesion_centroid_matches_mask(dataset: dict[str, Path], key: str, site: SiteSpec) -> None:
    lesion_rows = [row for row in _rows(dataset[key]) if row["label"] == "1"]
    assert lesion_rows
    for row in lesion_rows:
        slices = _series(dataset[key].parent / row["image"])
        found = _lesion_centroid_ras(slices, _scanner(row))
        expected = _mask_centroid_ras(dataset[key].parent / row["mask"])
        assert np.linalg.norm(found - expected) < 2.0, (row["case_id"], found, expected)
        # The liver (and its lesions) lie on the patient's right: LPS x < 0, i.e. RAS x > 0.
        assert expected[0] > 0


def test_dicom_tags(dataset: dict[str, Path]) -> None:
    manufacturers = set()
    for key, site in (("internal", INTERNAL_SITE), ("external", EXTERNAL_SITE)):
        row = _rows(dataset[key])[0]
        slices = _series(dataset[key].parent / row["image"])
        first = slices[0]
        for keyword in [
            "SOPClassUID",
            "SOPInstanceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
            "PatientID",
            "PatientName",
            "PatientSex",
            "PatientAge",
            "StudyDate",
            "StudyTime",
            "PixelSpacing",
            "SliceThickness",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "RescaleSlope",
            "RescaleIntercept",
            "Manufacturer",
            "ManufacturerModelName",
            "WindowCenter",
            "WindowWidth",
        ]:
            assert keyword in first, keyword
        assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert first.SOPClassUID == pydicom.uid.CTImageStorage
        assert first.Modality == "CT"
        assert first.PatientID == row["patient_id"]
        assert first.StudyInstanceUID == row["study_uid"]
        assert first.PatientAge == f"{int(row['age']):03d}Y"
        scanner = _scanner(row)
        assert scanner.name == site.name
        assert first.Manufacturer == row["manufacturer"] == scanner.manufacturer
        assert first.ManufacturerModelName == scanner.model_name
        assert float(first.RescaleSlope) == site.rescale_slope
        assert float(first.RescaleIntercept) == site.rescale_intercept
        assert (first.Rows, first.Columns) == (site.rows, site.cols)
        assert first.pixel_array.dtype == np.uint16
        assert len({s.SOPInstanceUID for s in slices}) == len(slices)
        for uid in (first.SOPInstanceUID, first.StudyInstanceUID, first.FrameOfReferenceUID):
            assert uid.is_valid and uid.startswith("2.25.")
        assert len({s.SeriesInstanceUID for s in slices}) == 1
        for element in first.iterall():
            if element.VR == "DS":
                raw = element.value if element.VM > 1 else [element.value]
                assert all(len(str(v)) <= 16 for v in raw), element
        manufacturers.add(first.Manufacturer)
    assert len(manufacturers) == 2


def test_site_calibration_differs(dataset: dict[str, Path]) -> None:
    """Air is ~-1000 HU at site A; site B's calibration pushes it below the stored range."""
    air = {}
    for key in ("internal", "external"):
        row = _rows(dataset[key])[0]
        hu = _hu_volume(_series(dataset[key].parent / row["image"]))
        air[key] = float(np.median(hu[:, :3, :3]))
    assert abs(air["internal"] + 1000.0) < 10.0
    assert air["external"] == -1024.0  # (-1000 * 1.05 + 20 + 1024) / 0.5 < 0 -> clipped to 0


def test_determinism(tmp_path: Path) -> None:
    kwargs = {"n_internal": 4, "n_external": 2}
    first = make_synthetic_ct(tmp_path / "one", seed=3, workers=1, **kwargs)
    second = make_synthetic_ct(tmp_path / "two", seed=3, workers=2, **kwargs)
    other = make_synthetic_ct(tmp_path / "three", seed=4, workers=1, **kwargs)
    for key in ("internal", "external"):
        assert first[key].read_bytes() == second[key].read_bytes()
        assert first[key].read_bytes() != other[key].read_bytes()
        case = _rows(first[key])[-1]
        a = _series(first[key].parent / case["image"])
        b = _series(second[key].parent / case["image"])
        c = _series(other[key].parent / case["image"])
        np.testing.assert_array_equal(_hu_volume(a), _hu_volume(b))
        assert [s.SOPInstanceUID for s in a] == [s.SOPInstanceUID for s in b]
        assert not np.array_equal(_hu_volume(a), _hu_volume(c))
        assert a[0].SOPInstanceUID != c[0].SOPInstanceUID
        for column in ("mask", "mask_organs"):
            mask_a = first[key].parent / case[column]
            mask_b = second[key].parent / case[column]
            assert mask_a.read_bytes() == mask_b.read_bytes()


def test_clinical_stream_leaves_images_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRP and outcome come from their own random stream: changing it changes no image."""
    kwargs = {"seed": 5, "n_internal": 3, "n_external": 1, "workers": 1}
    first = make_synthetic_ct(tmp_path / "one", **kwargs)
    monkeypatch.setattr(
        synthetic, "clinical_rng", lambda seed, *ids: clinical_rng(seed + 1000, *ids)
    )
    second = make_synthetic_ct(tmp_path / "two", **kwargs)
    for key in ("internal", "external"):
        rows_a, rows_b = _rows(first[key]), _rows(second[key])
        clinical = ("crp", "outcome")
        for a, b in zip(rows_a, rows_b, strict=True):
            assert {k: v for k, v in a.items() if k not in clinical} == {
                k: v for k, v in b.items() if k not in clinical
            }
            np.testing.assert_array_equal(
                _hu_nifti_order(first[key], a), _hu_nifti_order(second[key], b)
            )
            for column in ("mask", "mask_organs"):
                assert (first[key].parent / a[column]).read_bytes() == (
                    second[key].parent / b[column]
                ).read_bytes()
        assert [r["crp"] for r in rows_a] != [r["crp"] for r in rows_b]


def _liver_noise(manifest: Path, row: dict[str, str]) -> float:
    """Noise standard deviation (HU) measured in the liver, away from any lesion."""
    hu = _hu_nifti_order(manifest, row)
    labels = np.asarray(nib.load(manifest.parent / row["mask_organs"]).dataobj)
    lesion_zone = ndimage.binary_dilation(labels == LESION, iterations=2)
    core = ndimage.binary_erosion(labels == LIVER, iterations=1) & ~lesion_zone
    return float(np.std(hu[core]))


def test_manufacturer_subgroup_is_noisier(dataset: dict[str, Path]) -> None:
    """The internal legacy scanner's images are measurably noisier than the main scanner's."""
    noise: dict[str, list[float]] = {}
    for key in ("internal", "external"):
        for row in _rows(dataset[key]):
            first = pydicom.dcmread(
                sorted((dataset[key].parent / row["image"]).glob("*.dcm"))[0],
                stop_before_pixels=True,
            )
            assert first.Manufacturer == row["manufacturer"]
            noise.setdefault(row["manufacturer"], []).append(_liver_noise(dataset[key], row))
    for manufacturer, values in noise.items():
        site = SCANNERS[manufacturer]
        expected = site.noise_hu * site.hu_gain
        np.testing.assert_allclose(values, expected, rtol=0.1, err_msg=manufacturer)
    legacy = np.mean(noise[INTERNAL_SITE_LEGACY.manufacturer])
    assert legacy > 2.0 * np.mean(noise[INTERNAL_SITE.manufacturer])
    assert INTERNAL_SITE_LEGACY.lesion_contrast_scale < INTERNAL_SITE.lesion_contrast_scale


def test_legacy_scanner_share() -> None:
    """About LEGACY_SCANNER_FRACTION of internal patients, none external, use the legacy scanner."""
    internal = synthetic._plan_site(Path("unused"), 0, 0, 2000, follow_ups=True)
    external = synthetic._plan_site(Path("unused"), 0, 1, 200, follow_ups=False)
    share = np.mean([t.scanner_index for t in internal if t.study_index == 0])
    # Binomial(2000, 0.4): standard deviation ~0.011.
    assert abs(share - synthetic.LEGACY_SCANNER_FRACTION) < 0.04
    assert all(t.scanner_index == 0 for t in external)


def test_cache_hit(tmp_path: Path) -> None:
    paths = make_synthetic_ct(tmp_path, seed=1, n_internal=3, n_external=2)
    out = paths["internal"].parent.parent
    assert out.name == "synthetic_ct-v4-seed1-n3-2"
    assert (out / "COMPLETE").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary folders left
    stamp = (out / "COMPLETE").stat().st_mtime_ns
    manifest_stamp = paths["internal"].stat().st_mtime_ns
    start = time.perf_counter()
    again = make_synthetic_ct(tmp_path, seed=1, n_internal=3, n_external=2)
    assert time.perf_counter() - start < 0.5
    assert again == paths
    assert (out / "COMPLETE").stat().st_mtime_ns == stamp
    assert paths["internal"].stat().st_mtime_ns == manifest_stamp


def test_lost_race_uses_existing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another process publishes first, its dataset is kept and the temp folder removed."""
    final = tmp_path / "synthetic_ct-v4-seed2-n2-1"
    original = synthetic._generate_dataset

    def racing(out: Path, *args: object) -> int:
        n = original(out, *args)
        final.mkdir()
        (final / "winner").write_text("other process")
        (final / "COMPLETE").write_text("done")
        return n

    monkeypatch.setattr(synthetic, "_generate_dataset", racing)
    paths = make_synthetic_ct(tmp_path, seed=2, n_internal=2, n_external=1, workers=1)
    assert paths["internal"] == final / "site_A" / "manifest.csv"
    assert (final / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_stale_incomplete_folder_is_replaced(tmp_path: Path) -> None:
    final = tmp_path / "synthetic_ct-v4-seed2-n2-1"
    final.mkdir()
    (final / "junk").write_text("half-written")
    paths = make_synthetic_ct(tmp_path, seed=2, n_internal=2, n_external=1, workers=1)
    assert (final / "COMPLETE").is_file()
    assert not (final / "junk").exists()
    assert paths["external"].is_file()
