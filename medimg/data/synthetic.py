"""Deterministic synthetic multi-site CT-like dataset written as real DICOM series and NIfTI masks.

One manifest row per study serves several studies: ``label``/``mask`` (lesion present, lesion
mask: cls3d, seg3d), ``mask_organs`` (liver/kidney/lesion label map), ``lesion_volume_ml``
(reg3d) and ``crp``/``age``/``sex``/``outcome`` (image + covariates); ``manufacturer`` marks a
noisier legacy scanner within the internal site for subgroup analysis.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medimg.data.generated import cached_dataset, run_in_order, write_manifest_csv
from medimg.data.synthetic_clinical import AGE_RANGE, clinical_rng, draw_clinical
from medimg.data.synthetic_phantom import BODY_JITTER, BODY_SEMI_AXES, LESION, draw_lesion, phantom

logger = logging.getLogger(__name__)

DATASET_VERSION = "v4"
MANIFEST_COLUMNS = (
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
)
FOLLOW_UP_FRACTION = 0.1
LESION_PROBABILITY = 0.5

_MAX_SHIFT = 10.0
# Every random stream's seed words end with a non-zero tag of its kind. numpy's SeedSequence
# treats [s, a, p] and [s, a, p, 0] as the same entropy, so untagged, a patient's stream and
# its first study's stream coincided (v2 drew sex and lesion presence from one number).
_SITE_STREAM, _PATIENT_STREAM, _STUDY_STREAM = 1, 2, 3
_BASE_DATE = _dt.date(2019, 1, 1)


@dataclass(frozen=True)
class SiteSpec:
    """Acquisition protocol of one synthetic scanner / site.

    Attributes:
        name: Short site name (``"A"``, ``"B"``); prefixes patient and case ids.
        manufacturer: DICOM Manufacturer.
        model_name: DICOM ManufacturerModelName.
        rows: Image rows (y extent of each slice).
        cols: Image columns (x extent of each slice).
        n_slices: Number of slices (one DICOM file each).
        pixel_spacing: In-plane pixel spacing in mm (isotropic).
        slice_spacing: Distance between slice centres in mm (also SliceThickness).
        noise_hu: Standard deviation of the additive gaussian noise in HU.
        rescale_slope: DICOM RescaleSlope (HU = stored * slope + intercept).
        rescale_intercept: DICOM RescaleIntercept.
        hu_gain: Scanner calibration gain (stored HU = true HU * gain + offset).
        hu_offset: Scanner calibration offset in HU.
        descending: If True, slice positions decrease with file index.
        orientation: ``"axial"`` (IOP ``[1,0,0,0,1,0]``) or ``"axial_flipped"``
            (IOP ``[-1,0,0,0,-1,0]``).
        lesion_contrast_scale: Multiplier applied to the lesion contrast.
    """

    name: str
    manufacturer: str
    model_name: str
    rows: int
    cols: int
    n_slices: int
    pixel_spacing: float
    slice_spacing: float
    noise_hu: float
    rescale_slope: float
    rescale_intercept: float
    hu_gain: float
    hu_offset: float
    descending: bool
    orientation: str
    lesion_contrast_scale: float


INTERNAL_SITE = SiteSpec(
    name="A",
    manufacturer="SynthScan Medical",
    model_name="SS-64",
    rows=64,
    cols=64,
    n_slices=40,
    pixel_spacing=3.0,
    slice_spacing=4.0,
    noise_hu=15.0,
    rescale_slope=1.0,
    rescale_intercept=-1024.0,
    hu_gain=1.0,
    hu_offset=0.0,
    descending=False,
    orientation="axial",
    lesion_contrast_scale=1.0,
)

EXTERNAL_SITE = SiteSpec(
    name="B",
    manufacturer="Acme Imaging",
    model_name="AX-200",
    rows=80,
    cols=80,
    n_slices=52,
    pixel_spacing=2.5,
    slice_spacing=3.0,
    noise_hu=25.0,
    rescale_slope=0.5,
    rescale_intercept=-1024.0,
    hu_gain=1.05,
    hu_offset=20.0,
    descending=True,
    orientation="axial_flipped",
    lesion_contrast_scale=0.85,
)

# An older scanner at the internal site: same protocol geometry, more noise and less lesion
# contrast, so models do measurably worse on its studies (a subgroup for fairness analysis).
INTERNAL_SITE_LEGACY = replace(
    INTERNAL_SITE,
    manufacturer="Nova Systems",
    model_name="NV-16",
    noise_hu=40.0,
    lesion_contrast_scale=0.55,
)
LEGACY_SCANNER_FRACTION = 0.4  # share of internal patients scanned on the legacy scanner

_SITES = (INTERNAL_SITE, EXTERNAL_SITE)
# Scanners per site; the first one of a site defines its name and series geometry.
_SCANNERS = ((INTERNAL_SITE, INTERNAL_SITE_LEGACY), (EXTERNAL_SITE,))
_ORIENTATIONS = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "axial_flipped": (np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])),
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class _CaseTask:
    """Everything a worker needs to generate one case (picklable)."""

    seed: int
    site_index: int
    scanner_index: int
    patient_index: int
    study_index: int
    patient_id: str
    sex: str
    age: int
    body_scale: tuple[float, float]
    study_date: str
    out_dir: str


@dataclass(frozen=True)
class _Geometry:
    """Exact geometry of a DICOM series (LPS mm)."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    positions: np.ndarray  # (n_slices, 3) ImagePositionPatient per file index
    step: np.ndarray  # displacement between consecutive files


def make_synthetic_ct(
    root: str | Path,
    seed: int = 0,
    n_internal: int = 240,
    n_external: int = 120,
    workers: int = 2,
) -> dict[str, Path]:
    """Generate (or reuse) the synthetic two-site CT dataset.

    The dataset lives in ``root / f"synthetic_ct-{DATASET_VERSION}-seed{seed}-n{n_internal}-{n_external}"``.
    If that folder already holds a ``COMPLETE`` marker it is returned unchanged; otherwise it
    is generated in a temporary sibling folder and atomically renamed into place.

    Args:
        root: Parent folder for the dataset (created if missing).
        seed: Master seed; the output is a deterministic function of the arguments except
            ``workers``.
        n_internal: Number of site-A (internal) patients; ~10 % get a follow-up study and
            ~40 % are scanned on the legacy scanner (:data:`INTERNAL_SITE_LEGACY`).
        n_external: Number of site-B (external) patients, one study each.
        workers: Worker processes; ``<= 1`` generates serially.

    Returns:
        ``{"internal": <site_A/manifest.csv>, "external": <site_B/manifest.csv>}``.

    Raises:
        ValueError: If ``seed``, ``n_internal`` or ``n_external`` is negative.
    """
    if min(seed, n_internal, n_external) < 0:
        raise ValueError("seed, n_internal and n_external must be non-negative")
    root = Path(root)
    final = root / f"synthetic_ct-{DATASET_VERSION}-seed{seed}-n{n_internal}-{n_external}"
    paths = _manifest_paths(final)

    def generate(tmp: Path) -> int:
        start = time.perf_counter()
        logger.info("Generating synthetic CT dataset into %s (workers=%d)", final, workers)
        n_cases = _generate_dataset(tmp, seed, n_internal, n_external, workers)
        logger.info(
            "Synthetic CT dataset ready: %d cases in %.1f s", n_cases, time.perf_counter() - start
        )
        return n_cases

    cached_dataset(final, generate, "synthetic CT dataset")
    return paths


def _manifest_paths(final: Path) -> dict[str, Path]:
    """Return the manifest paths of a dataset folder."""
    return {
        "internal": final / f"site_{INTERNAL_SITE.name}" / "manifest.csv",
        "external": final / f"site_{EXTERNAL_SITE.name}" / "manifest.csv",
    }


def _generate_dataset(out: Path, seed: int, n_internal: int, n_external: int, workers: int) -> int:
    """Generate both sites into ``out`` and write their manifests; return the case count."""
    tasks = _plan_site(out, seed, 0, n_internal, follow_ups=True)
    tasks += _plan_site(out, seed, 1, n_external, follow_ups=False)
    for site in _SITES:
        (out / f"site_{site.name}" / "images").mkdir(parents=True)
        (out / f"site_{site.name}" / "masks").mkdir(parents=True)
        (out / f"site_{site.name}" / "organs").mkdir(parents=True)
    rows = run_in_order(_generate_case, tasks, workers)
    for site_index, site in enumerate(_SITES):
        site_rows = [
            row for task, row in zip(tasks, rows, strict=True) if task.site_index == site_index
        ]
        write_manifest_csv(out / f"site_{site.name}" / "manifest.csv", site_rows, MANIFEST_COLUMNS)
    return len(rows)


def _plan_site(
    out: Path, seed: int, site_index: int, n_patients: int, follow_ups: bool
) -> list[_CaseTask]:
    """Draw patient-level attributes and list the studies of one site."""
    site = _SITES[site_index]
    n_follow = round(FOLLOW_UP_FRACTION * n_patients) if follow_ups else 0
    site_rng = np.random.default_rng([seed, site_index, _SITE_STREAM])
    with_follow_up = set(site_rng.permutation(n_patients)[:n_follow].tolist())
    width = max(4, len(str(n_patients)))
    tasks = []
    for patient_index in range(n_patients):
        rng = np.random.default_rng([seed, site_index, patient_index, _PATIENT_STREAM])
        sex = "M" if rng.random() < 0.5 else "F"
        age = int(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1))
        jitter = rng.uniform(-BODY_JITTER, BODY_JITTER, 2)
        body_scale = (1.0 + float(jitter[0]), 1.0 + float(jitter[1]))
        base_day = int(rng.integers(0, 1500))
        follow_gap = int(rng.integers(60, 300))
        # Drawn at every site (one number per patient) so both sites consume the same stream.
        legacy = rng.random() < LEGACY_SCANNER_FRACTION and len(_SCANNERS[site_index]) > 1
        n_studies = 2 if patient_index in with_follow_up else 1
        for study_index in range(n_studies):
            day = base_day + study_index * follow_gap
            tasks.append(
                _CaseTask(
                    seed=seed,
                    site_index=site_index,
                    scanner_index=int(legacy),
                    patient_index=patient_index,
                    study_index=study_index,
                    patient_id=f"{site.name}{patient_index + 1:0{width}d}",
                    sex=sex,
                    age=age,
                    body_scale=body_scale,
                    study_date=(_BASE_DATE + _dt.timedelta(days=day)).strftime("%Y%m%d"),
                    out_dir=str(out / f"site_{site.name}"),
                )
            )
    return tasks


def _uid(task: _CaseTask, *parts: object) -> str:
    """Deterministic ``2.25.<uuid>`` DICOM UID derived from the case identity and ``parts``.

    ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` ignores ``entropy_srcs`` and
    returns a random UUID-based UID, so a name-based (SHA-1, version 5) UUID is used instead.
    """
    sources = [
        "medimg.synthetic_ct",
        DATASET_VERSION,
        str(task.seed),
        _SITES[task.site_index].name,
        str(task.patient_index),
        str(task.study_index),
        *(str(p) for p in parts),
    ]
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(sources)).int}"


def _generate_case(task: _CaseTask) -> dict[str, object]:
    """Generate, write and describe one case (runs in a worker process)."""
    site = _SCANNERS[task.site_index][task.scanner_index]
    rng = np.random.default_rng(
        [task.seed, task.site_index, task.patient_index, task.study_index, _STUDY_STREAM]
    )
    has_lesion = bool(rng.random() < LESION_PROBABILITY)
    shift = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, 3)
    study_seconds = int(rng.integers(7 * 3600, 19 * 3600))
    body_axes = np.array(BODY_SEMI_AXES) * np.array(task.body_scale)
    lesion = draw_lesion(rng, body_axes, site.lesion_contrast_scale) if has_lesion else None

    geometry = _series_geometry(site)
    x, y, z = _world_grid(site, geometry)
    hu, organs = phantom(x - shift[0], y - shift[1], z - shift[2], body_axes, lesion)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(site.noise_hu)
    stored = _to_stored(hu, site)
    clinical = draw_clinical(
        clinical_rng(task.seed, task.site_index, task.patient_index, task.study_index),
        lesion.volume_ml if lesion is not None else 0.0,
        task.age,
        task.sex,
    )

    case_id = f"{task.patient_id}_s{task.study_index + 1}"
    out = Path(task.out_dir)
    study_uid = _uid(task, "study")
    time_str = f"{study_seconds // 3600:02d}{study_seconds // 60 % 60:02d}{study_seconds % 60:02d}"
    _write_series(out / "images" / case_id, task, site, geometry, stored, study_uid, time_str)
    _write_mask(out / "masks" / f"{case_id}.nii.gz", organs == LESION, site, geometry)
    _write_mask(out / "organs" / f"{case_id}.nii.gz", organs, site, geometry)
    return {
        "case_id": case_id,
        "patient_id": task.patient_id,
        "study_uid": study_uid,
        "image": f"images/{case_id}",
        "label": int(has_lesion),
        "mask": f"masks/{case_id}.nii.gz",
        "site": site.name,
        "sex": task.sex,
        "age": task.age,
        "manufacturer": site.manufacturer,
        "mask_organs": f"organs/{case_id}.nii.gz",
        "lesion_volume_ml": round(lesion.volume_ml, 3) if lesion is not None else 0.0,
        "crp": "" if clinical.crp is None else clinical.crp,
        "outcome": clinical.outcome,
    }


def _series_geometry(site: SiteSpec) -> _Geometry:
    """Exact slice positions of a site's series, centred on the world origin."""
    row_dir, col_dir = _ORIENTATIONS[site.orientation]
    normal = np.cross(row_dir, col_dir)
    half_extent = np.array(
        [(site.cols - 1) / 2 * site.pixel_spacing, (site.rows - 1) / 2 * site.pixel_spacing]
    )
    offsets = (np.arange(site.n_slices) - (site.n_slices - 1) / 2) * site.slice_spacing
    if site.descending:
        offsets = offsets[::-1]
    corner = -half_extent[0] * row_dir - half_extent[1] * col_dir
    positions = corner[None, :] + offsets[:, None] * normal[None, :]
    positions = positions + 0.0  # normalise -0.0
    step = positions[1] - positions[0] if site.n_slices > 1 else site.slice_spacing * normal
    return _Geometry(row_dir, col_dir, normal, positions, step)


def _world_grid(site: SiteSpec, geometry: _Geometry) -> tuple[np.ndarray, ...]:
    """LPS world coordinates of every voxel centre, each shaped (n_slices, rows, cols)."""
    k = np.arange(site.n_slices, dtype=np.float64)[:, None, None]
    r = np.arange(site.rows, dtype=np.float64)[None, :, None] * site.pixel_spacing
    c = np.arange(site.cols, dtype=np.float64)[None, None, :] * site.pixel_spacing
    origin = geometry.positions[0]
    return tuple(
        origin[a] + k * geometry.step[a] + r * geometry.col_dir[a] + c * geometry.row_dir[a]
        for a in range(3)
    )


def _to_stored(hu: np.ndarray, site: SiteSpec) -> np.ndarray:
    """Apply scanner calibration and DICOM rescale; return uint16 stored values."""
    calibrated = hu * site.hu_gain + site.hu_offset
    stored = np.rint((calibrated - site.rescale_intercept) / site.rescale_slope)
    return np.clip(stored, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _ds(value: float) -> str:
    """Format a number as a DICOM DS string (at most 16 characters)."""
    value = float(value) + 0.0
    return f"{0.0 if value == 0 else value:.6g}"


def _write_series(
    folder: Path,
    task: _CaseTask,
    site: SiteSpec,
    geometry: _Geometry,
    stored: np.ndarray,
    study_uid: str,
    study_time: str,
) -> None:
    """Write one DICOM file per slice (file index order = array slice order)."""
    folder.mkdir(parents=True)
    ds = _base_dataset(task, site, geometry, study_uid, study_time)
    width = max(4, len(str(site.n_slices - 1)))
    for k in range(site.n_slices):
        sop_uid = _uid(task, "sop", k)
        position = geometry.positions[k]
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ geometry.normal))
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<u2").tobytes()
        ds.save_as(folder / f"{k:0{width}d}.dcm", enforce_file_format=True)


def _base_dataset(
    task: _CaseTask, site: SiteSpec, geometry: _Geometry, study_uid: str, study_time: str
) -> Dataset:
    """Build the per-series DICOM dataset; per-slice attributes are filled in later."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = _uid(task, "series", 1)
    ds.FrameOfReferenceUID = _uid(task, "frame_of_reference")
    ds.Modality = "CT"
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model_name
    ds.PatientName = f"SYNTH^{task.patient_id}"
    ds.PatientID = task.patient_id
    ds.PatientSex = task.sex
    ds.PatientAge = f"{task.age:03d}Y"
    ds.PatientBirthDate = ""
    ds.StudyDate = task.study_date
    ds.SeriesDate = task.study_date
    ds.StudyTime = study_time
    ds.StudyID = f"{task.study_index + 1}"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "ABDOMEN"
    ds.ImageOrientationPatient = [_ds(v) for v in (*geometry.row_dir, *geometry.col_dir)]
    ds.PixelSpacing = [_ds(site.pixel_spacing), _ds(site.pixel_spacing)]
    ds.SliceThickness = _ds(site.slice_spacing)
    ds.Rows = site.rows
    ds.Columns = site.cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = _ds(site.rescale_slope)
    ds.RescaleIntercept = _ds(site.rescale_intercept)
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def mask_affine(site: SiteSpec) -> np.ndarray:
    """Voxel-to-RAS affine of a site's mask NIfTI.

    The NIfTI array index ``(i, j, k)`` is (DICOM column, DICOM row, file index).

    Args:
        site: The acquisition protocol.

    Returns:
        A 4x4 float64 affine mapping voxel indices to RAS millimetres.
    """
    return _affine_from_geometry(site, _series_geometry(site))


def _affine_from_geometry(site: SiteSpec, geometry: _Geometry) -> np.ndarray:
    """Voxel-to-RAS affine for index order (column, row, file index)."""
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_dir * site.pixel_spacing
    lps[:3, 1] = geometry.col_dir * site.pixel_spacing
    lps[:3, 2] = geometry.step
    lps[:3, 3] = geometry.positions[0]
    ras = lps.copy()
    ras[:3, :] = _LPS_TO_RAS @ lps[:3, :]
    return ras + 0.0


def _write_mask(path: Path, mask: np.ndarray, site: SiteSpec, geometry: _Geometry) -> None:
    """Write a label map (uint8, any labels) as a gzipped NIfTI in the DICOM series geometry."""
    affine = _affine_from_geometry(site, geometry)
    data = np.ascontiguousarray(mask.transpose(2, 1, 0), dtype=np.uint8)  # (col, row, file)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_data_dtype(np.uint8)
    nib.save(image, str(path))
