"""Deterministic synthetic two-site chest-radiograph dataset: one DX DICOM file per study.

Each study is a frontal chest-like phantom (:mod:`medimg.data.chest_phantom`) seen by one of
the synthetic systems of :mod:`medimg.data.radiography` and written as Digital X-Ray Image
Storage – For Presentation (12 bits, MONOCHROME2 or MONOCHROME1) with a 2D NIfTI label map
(1 lung, 2 heart) on the same pixel grid.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from medimg.data.chest_phantom import ChestAnatomy, Findings, draw_chest, place_nodule
from medimg.data.generated import cached_dataset, run_in_order, write_manifest_csv
from medimg.data.radiography import (
    SITES,
    Vendor,
    detector_values,
    pixel_coordinates,
    write_dx,
    write_mask,
)

logger = logging.getLogger(__name__)

DATASET_VERSION = "v1"
FINDINGS = ("nodule", "effusion", "cardiomegaly")
MANIFEST_COLUMNS = (
    "case_id",
    "patient_id",
    "study_uid",
    "image",
    "label",
    *FINDINGS,
    "mask",
    "site",
    "sex",
    "age",
    "manufacturer",
)
FOLLOW_UP_FRACTION = 0.15
MONOCHROME1_FRACTION = 0.2
_BASE_PREVALENCE = {"nodule": 0.28, "effusion": 0.28, "cardiomegaly": 0.3}
_AGE_EFFECT = 0.2  # prevalence change from age 25 to 85 (centred on 55): findings go with age
_MAX_SHIFT = 10.0  # mm, patient position in the field
_MAX_TILT = 0.05  # rad, patient rotation in the image plane
_BASE_DATE = _dt.date(2020, 1, 1)


@dataclass(frozen=True)
class _StudyTask:
    """Everything a worker needs to generate one study (picklable)."""

    seed: int
    site: str
    patient_index: int
    study_index: int
    patient_id: str
    sex: str
    age: int
    anatomy: ChestAnatomy
    persistent: tuple[bool, bool]  # nodule, cardiomegaly (kept across follow-up studies)
    study_date: str
    out_dir: str


def make_synthetic_dx(
    root: str | Path,
    seed: int = 0,
    n_internal: int = 400,
    n_external: int = 150,
    workers: int = 2,
) -> dict[str, Path]:
    """Generate (or reuse) the synthetic two-site chest-radiograph dataset.

    The dataset lives in ``root / f"synthetic_dx-{DATASET_VERSION}-seed{seed}-n{n_internal}-{n_external}"``;
    a folder holding a ``COMPLETE`` marker is returned unchanged, else the dataset is written
    to a temporary sibling folder and atomically renamed into place.

    Args:
        root: Parent folder for the dataset (created if missing).
        seed: Master seed; the files are a deterministic function of the arguments except
            ``workers``.
        n_internal: Site-A (internal) patients; ~15 % get a follow-up study.
        n_external: Site-B (external) patients, one study each.
        workers: Worker processes; ``<= 1`` generates serially.

    Returns:
        ``{"internal": <site_A/manifest.csv>, "external": <site_B/manifest.csv>}``; image and
        mask paths in them are relative to the manifest's folder.

    Raises:
        ValueError: If ``seed``, ``n_internal`` or ``n_external`` is negative.
    """
    if min(seed, n_internal, n_external) < 0:
        raise ValueError("seed, n_internal and n_external must be non-negative")
    root = Path(root)
    final = root / f"synthetic_dx-{DATASET_VERSION}-seed{seed}-n{n_internal}-{n_external}"
    paths = {
        "internal": final / "site_A" / "manifest.csv",
        "external": final / "site_B" / "manifest.csv",
    }

    def generate(tmp: Path) -> int:
        start = time.perf_counter()
        tasks = _plan(tmp, seed, "A", n_internal, follow_ups=True)
        tasks += _plan(tmp, seed, "B", n_external, follow_ups=False)
        rows = run_in_order(_generate, tasks, workers)
        for site in SITES:
            site_rows = [r for t, r in zip(tasks, rows, strict=True) if t.site == site]
            write_manifest_csv(tmp / f"site_{site}" / "manifest.csv", site_rows, MANIFEST_COLUMNS)
        logger.info(
            "Synthetic DX dataset: %d studies in %.1f s", len(rows), time.perf_counter() - start
        )
        return len(rows)

    cached_dataset(final, generate, "synthetic DX dataset")
    return paths


def _prevalence(finding: str, age: int) -> float:
    """Probability of a finding at an age."""
    return _BASE_PREVALENCE[finding] + _AGE_EFFECT * (age - 55) / 60.0


def _plan(out: Path, seed: int, site: str, n_patients: int, follow_ups: bool) -> list[_StudyTask]:
    """Draw patient-level attributes and anatomy; list the studies of one site."""
    (out / f"site_{site}" / "images").mkdir(parents=True)
    (out / f"site_{site}" / "masks").mkdir(parents=True)
    site_index = list(SITES).index(site)
    n_follow = round(FOLLOW_UP_FRACTION * n_patients) if follow_ups else 0
    with_follow_up = set(
        np.random.default_rng([seed, site_index]).permutation(n_patients)[:n_follow].tolist()
    )
    width = max(4, len(str(n_patients)))
    tasks = []
    for patient in range(n_patients):
        rng = np.random.default_rng([seed, site_index, patient])
        sex = "M" if rng.random() < 0.5 else "F"
        age = int(rng.integers(25, 86))
        nodule = bool(rng.random() < _prevalence("nodule", age))
        cardiomegaly = bool(rng.random() < _prevalence("cardiomegaly", age))
        # Cardiomegaly is a cardiothoracic ratio above 0.5; cases near it are the hard ones.
        ctr = rng.uniform(0.51, 0.62) if cardiomegaly else rng.uniform(0.38, 0.49)
        half_width = rng.uniform(132.0, 150.0) * (1.0 if sex == "M" else 0.94)
        dome = rng.uniform(70.0, 90.0)
        anatomy = ChestAnatomy(
            half_width=float(half_width),
            ctr=float(ctr),
            dome_right=float(dome),
            dome_left=float(dome + rng.uniform(4.0, 14.0)),
            rib_phase=float(rng.uniform(0.0, 24.0)),
        )
        first_day, gap = int(rng.integers(0, 1400)), int(rng.integers(30, 400))
        for study in range(2 if patient in with_follow_up else 1):
            day = _BASE_DATE + _dt.timedelta(days=first_day + study * gap)
            tasks.append(
                _StudyTask(
                    seed=seed,
                    site=site,
                    patient_index=patient,
                    study_index=study,
                    patient_id=f"{site}{patient + 1:0{width}d}",
                    sex=sex,
                    age=age,
                    anatomy=anatomy,
                    persistent=(nodule, cardiomegaly),
                    study_date=day.strftime("%Y%m%d"),
                    out_dir=str(out / f"site_{site}"),
                )
            )
    return tasks


def _findings(
    rng: np.random.Generator, task: _StudyTask, patient_rng: np.random.Generator
) -> Findings:
    """This study's findings; a nodule keeps its place and size across the patient's studies."""
    effusion: tuple[int, ...] = ()
    if rng.random() < _prevalence("effusion", task.age):
        draw = rng.random()
        effusion = (-1,) if draw < 0.4 else (1,) if draw < 0.8 else (-1, 1)
    findings = Findings(effusion=effusion, effusion_height=float(rng.uniform(35.0, 75.0)))
    if not task.persistent[0]:
        return findings
    radius = float(patient_rng.uniform(8.0, 13.0))
    contrast = float(patient_rng.uniform(0.22, 0.32))
    centre = place_nodule(
        patient_rng, task.anatomy, Findings(effusion=(-1, 1), effusion_height=75.0), radius
    )
    return Findings(
        nodule=(*centre, radius, contrast),
        effusion=effusion,
        effusion_height=findings.effusion_height,
    )


def _uid(task: _StudyTask, *parts: object) -> str:
    """A deterministic UID (pydicom's ``generate_uid`` hashes the entropy sources)."""
    sources = ["medimg.synthetic_dx", DATASET_VERSION, task.seed, task.site, task.patient_index]
    return generate_uid(entropy_srcs=[str(p) for p in (*sources, task.study_index, *parts)])


def _generate(task: _StudyTask) -> dict[str, object]:
    """Draw, write and describe one study (runs in a worker process)."""
    rng = np.random.default_rng(
        [task.seed, list(SITES).index(task.site), task.patient_index, task.study_index, 1]
    )
    patient_rng = np.random.default_rng(
        [task.seed, list(SITES).index(task.site), task.patient_index, 2]
    )
    vendors, weights = zip(*SITES[task.site], strict=True)
    vendor = vendors[int(rng.choice(len(vendors), p=np.asarray(weights)))]
    findings = _findings(rng, task, patient_rng)
    density, labels = _render(rng, task.anatomy, findings, vendor)
    stored = detector_values(rng, density, vendor)
    monochrome1 = bool(rng.random() < MONOCHROME1_FRACTION)
    case_id = f"{task.patient_id}_s{task.study_index + 1}"
    out = Path(task.out_dir)
    study_uid = _uid(task, "study")
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    header = {
        "PatientName": f"SYNTH^{task.patient_id}",
        "PatientID": task.patient_id,
        "PatientSex": task.sex,
        "PatientAge": f"{task.age:03d}Y",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": _uid(task, "series"),
        "SOPInstanceUID": _uid(task, "sop"),
        "StudyDate": task.study_date,
        "StudyTime": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        "StudyID": str(task.study_index + 1),
        "KVP": f"{rng.uniform(110.0, 125.0):.4g}",
    }
    write_dx(out / "images" / f"{case_id}.dcm", vendor, stored, monochrome1, header)
    write_mask(out / "masks" / f"{case_id}.nii.gz", labels, vendor)
    present = {
        "nodule": findings.nodule is not None,
        "effusion": bool(findings.effusion),
        "cardiomegaly": task.persistent[1],
    }
    return {
        "case_id": case_id,
        "patient_id": task.patient_id,
        "study_uid": study_uid,
        "image": f"images/{case_id}.dcm",
        "label": int(any(present.values())),
        **{name: int(value) for name, value in present.items()},
        "mask": f"masks/{case_id}.nii.gz",
        "site": task.site,
        "sex": task.sex,
        "age": task.age,
        "manufacturer": vendor.manufacturer,
    }


def _render(
    rng: np.random.Generator, anatomy: ChestAnatomy, findings: Findings, vendor: Vendor
) -> tuple[np.ndarray, np.ndarray]:
    """Density and label map (rows, columns) with the patient shifted and turned in the field."""
    x, y = pixel_coordinates(vendor)
    shift = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, 2)
    tilt = rng.uniform(-_MAX_TILT, _MAX_TILT)
    cos, sin = math.cos(tilt), math.sin(tilt)
    px = cos * (x - shift[0]) + sin * (y - shift[1])
    py = -sin * (x - shift[0]) + cos * (y - shift[1])
    return draw_chest(anatomy, findings, px, py)
